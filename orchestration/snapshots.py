"""Snapshot jobs: re-read a pipeline's tables on demand, from the UI, with progress in the logs.

A pipeline whose capture never ran has no slot yet: its first capture run takes the initial
snapshot (consistent, handed off to streaming), so the job starts the capture stream and
follows the snapshot. On a live pipeline, the job asks the running capture for an incremental
re-snapshot of the chosen tables (DBLog watermarks: no lock, no pause of streaming) and
follows it until capture has confirmed its last chunk.
"""

import time

from dagster import Config, Failure, JobDefinition, OpExecutionContext, job, op
from pydantic import Field

from orchestration.resources import SluicewayResource
from orchestration.streams import StreamStore
from sluiceway.connect import postgres_connection
from sluiceway.pipeline import Pipeline
from streaming.sources.postgres.catalog import slot_health
from streaming.sources.postgres.incremental import request_snapshot
from streaming.sources.postgres.state import CaptureState

__all__ = ["capture_stream_name", "snapshot_job"]

TIMEOUT_SECONDS = 6 * 3600


def capture_stream_name(pipeline: Pipeline) -> str:
    return f"{pipeline.name}_capture"


def snapshot_job(pipeline: Pipeline, tables: list[tuple[str, str]]) -> JobDefinition:
    """The snapshot job of one pipeline."""
    every = [f"{s}.{t}" for s, t in tables]

    class SnapshotConfig(Config):
        tables: list[str] = Field(
            default=every, description="schema.table to snapshot; default: every table"
        )

    @op(name=f"{pipeline.name}_snapshot_tables", description="Snapshot tables, following progress")
    def snapshot(
        context: OpExecutionContext, config: SnapshotConfig, sluiceway: SluicewayResource
    ) -> None:
        settings = sluiceway.settings()
        store = StreamStore(settings)
        stream = capture_stream_name(pipeline)
        conn = postgres_connection(
            settings.postgres, database=getattr(pipeline.source, "database", None)
        )
        try:
            health = slot_health(conn, pipeline.slot)
            if health is None:
                context.log.info(
                    f"{pipeline.name} has not captured yet: its first capture run snapshots "
                    f"every table; starting the {stream} stream"
                )
                store.want(stream, "running")
                _follow_initial(context, store, stream)
                return
            request = request_snapshot(conn, list(config.tables))
        finally:
            conn.close()
        context.log.info(f"requested incremental snapshot {request} of {', '.join(config.tables)}")
        if not store.read(stream).fresh():
            context.log.warning(
                f"the {stream} stream is not running: the request waits in the log until it runs"
            )
        _follow_incremental(context, settings.state_dir, pipeline, store, stream, request)

    @job(
        name=f"{pipeline.name}_snapshot",
        description=f"Snapshot {pipeline.name}'s tables (initial, or incremental on a live "
        "pipeline), progress in the logs",
        tags={"sluiceway/pipeline": pipeline.name},
    )
    def snapshot_tables() -> None:
        snapshot()

    return snapshot_tables


def _follow_initial(context: OpExecutionContext, store: StreamStore, stream: str) -> None:
    deadline = time.monotonic() + TIMEOUT_SECONDS
    last = -1
    while time.monotonic() < deadline:
        numbers = store.read(stream).numbers
        if numbers.get("phase") == "streaming":
            context.log.info(f"initial snapshot done: {numbers.get('snapshot rows', 0):,} rows")
            return
        rows = int(numbers.get("snapshot rows", 0))
        if rows != last:
            estimate = int(numbers.get("snapshot estimate", 0))
            context.log.info(f"initial snapshot: {rows:,} of ~{estimate:,} rows")
            last = rows
        time.sleep(2)
    raise Failure(f"the initial snapshot did not finish in {TIMEOUT_SECONDS} s")


def _follow_incremental(
    context: OpExecutionContext,
    state_dir: object,
    pipeline: Pipeline,
    store: StreamStore,
    stream: str,
    request: str,
) -> None:
    path = CaptureState.path(state_dir, pipeline.name)  # type: ignore[arg-type]
    deadline = time.monotonic() + TIMEOUT_SECONDS
    last = -1
    while time.monotonic() < deadline:
        state = CaptureState.load(path)
        progress = state.incremental if state else None
        if state is not None and request in state.completed:
            context.log.info(f"incremental snapshot {request} done")
            return
        rows = int(store.read(stream).numbers.get("incremental rows", 0))
        if rows != last:
            table = (progress or {}).get("table") or "waiting for capture"
            context.log.info(f"incremental snapshot: {rows:,} rows emitted ({table})")
            last = rows
        time.sleep(2)
    raise Failure(f"incremental snapshot {request} did not finish in {TIMEOUT_SECONDS} s")
