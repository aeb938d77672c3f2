"""Snowflake as a target: PUT + COPY INTO a staging table, then the position-guarded merge."""

from loaders.snowflake.sink import SnowflakeSink

__all__ = ["SnowflakeSink"]
