"""PostgreSQL as a target (and, in migrations, as the new primary)."""

from loaders.postgres.sink import PostgresSink

__all__ = ["PostgresSink"]
