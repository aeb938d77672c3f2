"""Open the sink a pipeline's target specification names."""

from __future__ import annotations

from loaders.base import Sink
from sluiceway.pipeline import (
    AnyTarget,
    BigQueryTarget,
    DuckDBTarget,
    Pipeline,
    S3Target,
    SnowflakeTarget,
)
from sluiceway.settings import Settings

__all__ = ["open_sink"]


def open_sink(settings: Settings, pipeline: Pipeline, target: AnyTarget) -> Sink:
    """The sink for ``target``."""
    schema = target.schema_name or pipeline.name
    if isinstance(target, DuckDBTarget):
        from loaders.duckdb import DuckDBSink

        return DuckDBSink(target.path or settings.state_dir / "warehouse.duckdb", schema)
    if isinstance(target, SnowflakeTarget):
        from loaders.snowflake import SnowflakeSink

        return SnowflakeSink(settings.snowflake, schema)
    if isinstance(target, BigQueryTarget):
        from loaders.bigquery import BigQuerySink

        return BigQuerySink(settings.bigquery, schema)
    if isinstance(target, S3Target):
        from loaders.s3 import S3Sink

        return S3Sink(settings.s3, target.root or pipeline.name)
    from loaders.postgres import PostgresSink

    return PostgresSink(settings.postgres, target.database, schema)
