"""Kafka, where capture ends and every consumer begins: topics and the acknowledging producer."""

from streaming.kafka.producer import DeliveryTracker, EventProducer
from streaming.kafka.topics import ensure_topics

__all__ = ["DeliveryTracker", "EventProducer", "ensure_topics"]
