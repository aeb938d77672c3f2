"""Batch loads: a pipeline target's tables as time-partitioned assets, backfilled from Kafka.

Each partition (hourly or daily, per the target's specification) is a time window of the
pipeline's change topics, loaded with the bounded loader (`Loader.load_window`: start and end
offsets found with ``offsets_for_times``). Loading a window again leaves the same rows, so a
backfill — partitions picked in the UI, or the ``launchPartitionBackfill`` GraphQL mutation —
simply replays those windows. The single-run backfill policy loads a range of partitions as
one window in one run: one pass over the topics instead of one per partition. Windows older
than the topics' retention replay from the pipeline's S3 archive when it has an S3 target.
"""

import time
from datetime import datetime

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    AssetSpec,
    BackfillPolicy,
    DailyPartitionsDefinition,
    HourlyPartitionsDefinition,
    MaterializeResult,
    TimeWindowPartitionsDefinition,
    multi_asset,
)

from loaders.runner import Loader
from loaders.s3.archive import ArchiveReader
from loaders.targets import open_sink
from orchestration.assets import owners, target_keys, topic_key
from orchestration.resources import SluicewayResource
from sluiceway.pipeline import AnyTarget, Pipeline, S3Target
from sluiceway.settings import Settings

__all__ = ["archive_of", "batch_load", "partitions_of"]


def partitions_of(target: AnyTarget) -> TimeWindowPartitionsDefinition:
    """The target's time partitions (UTC), the current hour or day included (it fills as
    changes arrive; loading it again later adds the rest)."""
    start = target.partitions_start
    if target.partitions == "hourly":
        return HourlyPartitionsDefinition(start_date=start.strftime("%Y-%m-%d-%H:%M"), end_offset=1)
    return DailyPartitionsDefinition(start_date=start.strftime("%Y-%m-%d"), end_offset=1)


def batch_load(
    pipeline: Pipeline, target: AnyTarget, tables: list[tuple[str, str]]
) -> AssetsDefinition:
    """The partitioned assets of one target's tables, materialized by loading windows."""
    partitions = partitions_of(target)
    specs = [
        AssetSpec(
            key,
            deps=[topic_key(pipeline, schema, table)],
            description=f"{target.kind} table {key.path[-1]}: {schema}.{table} "
            + (
                "every change (history)"
                if key.path[-1].endswith("__history")
                else "current state, one row per key"
            ),
            kinds={target.kind},
            group_name=pipeline.name,
            owners=owners(pipeline),
            metadata={"schema": target.schema_name or pipeline.name, "mode": target.mode},
        )
        for schema, table in tables
        for key in target_keys(pipeline, target, schema, table)
    ]

    @multi_asset(
        name=f"{pipeline.name}_{target.kind}_batch_load",
        specs=specs,
        partitions_def=partitions,
        backfill_policy=BackfillPolicy.single_run(),
        description=f"Load {pipeline.name}'s change topics into {target.kind}, one time window "
        "per partition (a backfill replays the windows from Kafka)",
    )
    def load(context: AssetExecutionContext, sluiceway: SluicewayResource) -> object:
        settings = sluiceway.settings()
        window = context.partition_time_window
        start_ms = int(window.start.timestamp() * 1000)
        end_ms = int(window.end.timestamp() * 1000)
        sink = open_sink(settings, pipeline, target)
        loader = Loader(
            settings,
            pipeline,
            sink,
            mode=target.mode,
            batch_rows=target.batch_rows,
            group=f"sluiceway.{pipeline.name}.{target.kind}.batch",
        )
        archive = archive_of(settings, pipeline, target)
        context.log.info(
            f"loading {_iso(window.start)} .. {_iso(window.end)} into {target.kind}"
            + (
                f" (from Kafka, and the S3 archive {archive.root} below retention)"
                if archive
                else ""
            )
        )
        began = time.monotonic()
        try:
            rows = loader.load_window(start_ms, end_ms, archive=archive)
        finally:
            sink.close()
        elapsed = time.monotonic() - began
        context.log.info(f"loaded {rows:,} changes in {elapsed:.1f} s")
        for spec in specs:
            yield MaterializeResult(
                asset_key=spec.key,
                metadata={
                    "window start": _iso(window.start),
                    "window end": _iso(window.end),
                    "changes loaded (all tables)": rows,
                    "seconds": round(elapsed, 2),
                    "dead letters": loader.stats.dead_letters,
                },
            )

    return load


def archive_of(settings: Settings, pipeline: Pipeline, target: AnyTarget) -> ArchiveReader | None:
    """The pipeline's S3 archive, to replay windows older than the topics' retention."""
    for other in pipeline.targets:
        if isinstance(other, S3Target) and other is not target:
            return ArchiveReader(settings.s3, other.root or pipeline.name)
    return None


def _iso(moment: datetime) -> str:
    return moment.isoformat()
