"""Log-based capture from PostgreSQL with pgoutput: decode, convert, snapshot, stream."""

from streaming.sources.postgres.capture import CaptureStats, PostgresCapture

__all__ = ["CaptureStats", "PostgresCapture"]
