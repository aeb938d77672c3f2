"""kill -9 of the loader mid-load, then resume: the target is exact (effectively once)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
import yaml
from confluent_kafka import Consumer, TopicPartition

from loaders.base import Sink
from loaders.postgres import PostgresSink
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
from tests.integration.test_loader_s3 import _current, _download, _objects
from tests.integration.test_loaders import (
    _pg_rows,
    _query,
    _setup,
    _sink,
    _table,
    _target_rows,
    _workload,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _committed(settings: Settings, group: str, topic: str) -> tuple[int, int]:
    """(committed offsets summed, high watermarks summed) of the loader's group."""
    consumer = Consumer({**settings.kafka.client_config(), "group.id": group})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        tps = [TopicPartition(topic, p) for p in partitions]
        committed = sum(max(tp.offset, 0) for tp in consumer.committed(tps, timeout=10))
        high = sum(consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in tps)
        return committed, high
    finally:
        consumer.close()


_SERVICE = {
    "postgres": "postgres",
    "s3": "seaweedfs",
    "bigquery": "bigquery",
    "snowflake": "fakesnow",
}


def _target_spec(kind: str, unique: str, warehouse: Path) -> dict[str, object]:
    # Warehouse emulators take ~0.5 s per batch: larger batches keep the test short while
    # still leaving several batches to kill in the middle of.
    batch = {"batch_rows": 50, "batch_seconds": 0.05}
    if kind in ("bigquery", "snowflake", "s3"):
        batch = {"batch_rows": 500, "batch_seconds": 0.2}
    extra: dict[str, object] = {
        "duckdb": {"path": str(warehouse)},
        "postgres": {"database": f"{unique}_target"},
        "s3": {"mode": "history"},
    }.get(kind, {})
    mode = {} if kind == "s3" else {"mode": "both"}
    return {"kind": kind, **mode, **batch, **extra}


def _start(spec: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "sluiceway.cli", "load", "run", str(spec)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.parametrize("kind", ["duckdb", "postgres", "s3", "bigquery", "snowflake"])
def test_kill_9_mid_load_then_resume_is_exact(
    settings: Settings, stack: Stack, unique: str, tmp_path: Path, kind: str
) -> None:
    require(stack, "postgres")
    if kind in _SERVICE:
        require(stack, _SERVICE[kind])
    warehouse = tmp_path / "w.duckdb"
    spec = tmp_path / f"{unique}.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": unique,
                "source": {"database": unique},
                "topics": {"partitions": 3},
                "targets": [_target_spec(kind, unique, warehouse)],
            }
        )
    )
    log = tmp_path / "loader.log"
    topic = f"{unique}.public.orders"
    group = f"sluiceway.{unique}.{kind}"
    with (
        temporary_database(settings, unique) as conn,
        contextlib.ExitStack() as cleanup,
    ):
        if kind == "postgres":
            cleanup.enter_context(temporary_database(settings, f"{unique}_target"))
        _setup(conn)
        with capture_running(settings, make_pipeline(unique)) as capture:
            _workload(conn, 4000, 12)
            wait_caught_up(capture, conn)
        high = _committed(settings, group, topic)[1]
        progress = 0
        for _ in range(3):  # each kill lands right after the loader made progress
            proc = _start(spec, log)
            deadline = time.monotonic() + 90
            while (committed := _committed(settings, group, topic)[0]) <= progress:
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.01)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            progress = committed
        assert 0 < progress < high, "the kills should land mid-load"
        proc = _start(spec, log)
        deadline = time.monotonic() + 180
        while _committed(settings, group, topic)[0] < high:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-3000:]

        events = [v for _, v in read_topic(settings, topic) if v]
        if kind == "s3":
            keys = list(_objects(settings, unique))
            files = _download(settings, keys, tmp_path)
            assert _current(files) == _pg_rows(conn)
            archived = duckdb.connect().execute(f"SELECT count(*) FROM read_parquet('{files}')")
            assert archived.fetchall() == [(len(events),)]  # nothing doubled, nothing missing
            return
        with contextlib.ExitStack() as opened:
            if kind == "postgres":  # the target database made above, not a fresh one
                sink: Sink = PostgresSink(settings.postgres, f"{unique}_target", unique)
                opened.callback(sink.close)
            else:
                sink = opened.enter_context(_sink(kind, settings, unique, warehouse))
            assert _target_rows(sink, unique) == _pg_rows(conn)
            history = f"SELECT count(*) FROM {_table(sink, unique, 'orders__history')}"
            assert _query(sink, history) == [(len(events),)]  # nothing doubled, nothing missing
