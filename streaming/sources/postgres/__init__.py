"""Log-based capture from PostgreSQL with pgoutput: decode, convert, snapshot, stream."""

from streaming.sources.base import CaptureStats
from streaming.sources.postgres.capture import PostgresCapture

__all__ = ["CaptureStats", "PostgresCapture"]
