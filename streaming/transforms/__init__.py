"""Capture-time transforms: Kafka Connect's single message transforms, run before Kafka."""

from streaming.transforms.chain import Record, TransformChain, TransformError

__all__ = ["Record", "TransformChain", "TransformError"]
