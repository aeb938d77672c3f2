"""Replays beyond Kafka's retention: the S3 archive keeps every record, and a window whose
oldest records Kafka already dropped is loaded from the archive first — exactly."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition

from loaders.duckdb import DuckDBSink
from loaders.runner import Loader
from loaders.s3 import S3Sink
from loaders.s3.archive import ArchiveReader
from sluiceway.connect import kafka_admin
from sluiceway.settings import Settings
from stack.manager import Stack
from tests.integration.capture_support import (
    capture_running,
    make_pipeline,
    read_topic,
    temporary_database,
    wait_caught_up,
)
from tests.integration.conftest import require
from tests.integration.test_loaders import _pg_rows, _query, _setup, _target_rows, _workload

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FOREVER = (0, 4_102_444_800_000)  # 1970 .. 2100


def test_window_beyond_retention_replays_from_the_archive(
    settings: Settings, stack: Stack, unique: str, tmp_path: Path
) -> None:
    require(stack, "postgres")
    require(stack, "seaweedfs")
    topic = f"{unique}.public.orders"
    with temporary_database(settings, unique) as conn:
        _setup(conn)
        pipeline = make_pipeline(unique, topics={"partitions": 1})
        with capture_running(settings, pipeline) as capture:
            _workload(conn, 400, 17)
            wait_caught_up(capture, conn)
        events = [v for _, v in read_topic(settings, topic) if v]
        archive_sink = S3Sink(settings.s3, unique)
        Loader(settings, pipeline, archive_sink, mode="history").load_window(*FOREVER)
        archive_sink.close()

        # Retention drops the older half of the topic.
        dropped = len(events) // 2
        admin = kafka_admin(settings.kafka)
        futures = admin.delete_records([TopicPartition(topic, 0, dropped)])
        for future in futures.values():
            future.result(30)
        time.sleep(1)

        # Without the archive the window misses what Kafka dropped ...
        partial = DuckDBSink(tmp_path / "partial.duckdb", unique)
        Loader(settings, pipeline, partial, mode="both").load_window(*FOREVER)
        count = f'SELECT count(*) FROM "{unique}".orders__history'
        assert _query(partial, count) == [(len(events) - dropped,)]
        partial.close()

        # ... with it, the window is whole and the target equals the source.
        whole = DuckDBSink(tmp_path / "whole.duckdb", unique)
        loaded = Loader(settings, pipeline, whole, mode="both").load_window(
            *FOREVER, archive=ArchiveReader(settings.s3, unique)
        )
        assert loaded == len(events)
        assert _target_rows(whole, unique) == _pg_rows(conn)
        assert _query(whole, count) == [(len(events),)]
        whole.close()
