"""The stream jobs of a pipeline: capture, and one continuous load per target, with the numbers
each reports on its assets (see `orchestration.streams`)."""

from __future__ import annotations

import re
import time
from typing import Any

from dagster import JobDefinition

from loaders.runner import Loader
from loaders.targets import open_sink
from orchestration.assets import target_keys, topic_key
from orchestration.checks import high_watermarks
from orchestration.snapshots import capture_stream_name
from orchestration.streams import Worker, stream_job
from sluiceway.pipeline import AnyTarget, Pipeline
from sluiceway.settings import Settings
from streaming.processors.app import Processing
from streaming.sources import capture_for, describe_position

__all__ = [
    "capture_stream",
    "load_stream",
    "load_stream_name",
    "process_stream",
    "process_stream_name",
]

LAG_EVERY_SECONDS = 10.0


class _Rate:
    """Per-second rate of a growing counter, between two readings."""

    def __init__(self) -> None:
        self.at = time.monotonic()
        self.count = 0
        self.rate = 0.0

    def __call__(self, count: int) -> float:
        now = time.monotonic()
        if now - self.at >= 1.0:
            self.rate = (count - self.count) / (now - self.at)
            self.at, self.count = now, count
        return round(self.rate, 1)


def capture_stream(pipeline: Pipeline, tables: list[tuple[str, str]]) -> JobDefinition:
    """The capture stream: the source database → change topics."""
    rate = _Rate()

    def numbers(worker: Worker) -> dict[str, Any]:
        stats = worker.stats  # type: ignore[attr-defined]
        return {
            "phase": stats.phase,
            "events": stats.events,
            "events/s": rate(stats.events),
            "transactions": stats.transactions,
            "confirmed position": describe_position(pipeline, stats.confirmed_lsn),
            "lag (ms)": stats.lag_ms(),
            "dead letters": stats.dead_letters,
            "retained WAL (MiB)": round(stats.retained_wal_bytes / 2**20, 2),
            "snapshot rows": stats.snapshot_rows,
            "snapshot estimate": stats.snapshot_estimate,
            "incremental rows": stats.incremental_rows,
        }

    return stream_job(
        capture_stream_name(pipeline),
        f"Capture {pipeline.name} from {pipeline.source.kind} into Kafka, until stopped",
        lambda settings: capture_for(settings, pipeline),
        numbers,
        [topic_key(pipeline, s, t) for s, t in tables],
        {"sluiceway/pipeline": pipeline.name},
    )


def process_stream_name(pipeline: Pipeline) -> str:
    return f"{pipeline.name}_process"


def process_stream(pipeline: Pipeline) -> JobDefinition:
    """The processing stream: change topics → enrichment topics."""
    rate = _Rate()

    def numbers(worker: Worker) -> dict[str, Any]:
        assert isinstance(worker, Processing)
        stats = worker.stats
        return {
            "events in": stats.events_in,
            "events out": stats.events_out,
            "events/s": rate(stats.events_in),
            "late (dropped)": stats.late,
            "dead letters": stats.dead_letters,
        }

    return stream_job(
        process_stream_name(pipeline),
        f"Process {pipeline.name}'s change topics into enrichment topics, until stopped",
        lambda settings: Processing(settings, pipeline),
        numbers,
        [topic_key(pipeline, "enriched", p.name) for p in pipeline.processors],
        {"sluiceway/pipeline": pipeline.name},
    )


def load_stream_name(pipeline: Pipeline, target: AnyTarget) -> str:
    return f"{pipeline.name}_load_{target.kind}"


def load_stream(
    pipeline: Pipeline, target: AnyTarget, tables: list[tuple[str, str]]
) -> JobDefinition:
    """The continuous load of one target: change topics → target tables."""
    rate = _Rate()
    lag: dict[str, Any] = {"at": 0.0, "value": 0}
    settings_seen: dict[str, Settings] = {}
    pattern = re.compile(rf"^{re.escape(pipeline.topic_prefix)}\.[^.]+\.[^.]+$")

    def make(settings: Settings) -> Loader:
        settings_seen["settings"] = settings
        return Loader(
            settings,
            pipeline,
            open_sink(settings, pipeline, target),
            mode=target.mode,
            batch_rows=target.batch_rows,
            batch_seconds=target.batch_seconds,
        )

    def numbers(worker: Worker) -> dict[str, Any]:
        assert isinstance(worker, Loader)
        stats = worker.stats
        if time.monotonic() - lag["at"] > LAG_EVERY_SECONDS and "settings" in settings_seen:
            lag["at"] = time.monotonic()
            topics = {t for t, _ in stats.offsets} | {
                f"{pipeline.topic_prefix}.{s}.{t}" for s, t in tables
            }
            behind = 0
            for topic in sorted(t for t in topics if pattern.match(t)):
                for partition, high in high_watermarks(settings_seen["settings"], topic).items():
                    behind += max(0, high - stats.offsets.get((topic, partition), 0))
            lag["value"] = behind
        return {
            "changes loaded": stats.rows,
            "changes/s": rate(stats.rows),
            "batches": stats.batches,
            "last batch": stats.last_batch_rows,
            "consumer lag (records)": lag["value"],
            "dead letters": stats.dead_letters,
        }

    keys = [key for s, t in tables for key in target_keys(pipeline, target, s, t)]
    return stream_job(
        load_stream_name(pipeline, target),
        f"Load {pipeline.name}'s change topics into {target.kind} continuously, until stopped",
        make,
        numbers,
        keys,
        {"sluiceway/pipeline": pipeline.name},
    )
