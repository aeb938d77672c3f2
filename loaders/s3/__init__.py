"""S3 as the lake and the long-term archive of every change event (Parquet)."""

from loaders.s3.sink import S3Sink

__all__ = ["S3Sink"]
