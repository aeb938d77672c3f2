"""kill -9 of the loader mid-load, then resume: the target is exact (effectively once)."""

from __future__ import annotations

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
from tests.integration.test_loaders import COLUMNS, _pg_rows, _setup, _workload

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


def test_kill_9_mid_load_then_resume_is_exact(
    settings: Settings, stack: Stack, unique: str, tmp_path: Path
) -> None:
    require(stack, "postgres")
    warehouse = tmp_path / "w.duckdb"
    spec = tmp_path / f"{unique}.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": unique,
                "source": {"database": unique},
                "topics": {"partitions": 3},
                "targets": [
                    {"kind": "duckdb", "path": str(warehouse), "batch_rows": 50,
                     "batch_seconds": 0.05}
                ],
            }
        )
    )  # fmt: skip
    log = tmp_path / "loader.log"
    topic = f"{unique}.public.orders"
    group = f"sluiceway.{unique}.duckdb"
    with temporary_database(settings, unique) as conn:
        _setup(conn)
        with capture_running(settings, make_pipeline(unique)) as capture:
            _workload(conn, 4000, 12)
            wait_caught_up(capture, conn)
        high = _committed(settings, group, topic)[1]
        progress = 0
        for _ in range(3):  # each kill lands right after the loader made progress
            with log.open("ab") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "sluiceway.cli", "load", "run", str(spec)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            deadline = time.monotonic() + 60
            while (committed := _committed(settings, group, topic)[0]) <= progress:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.01)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            progress = committed
        assert 0 < progress < high, "the kills should land mid-load"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "sluiceway.cli", "load", "run", str(spec)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 120
        while _committed(settings, group, topic)[0] < high:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-3000:]

        target = duckdb.connect(str(warehouse))
        rows = target.execute(f'SELECT {COLUMNS} FROM "{unique}".orders ORDER BY id').fetchall()
        import orjson

        assert [(*r[:6], orjson.loads(r[6]) if r[6] else None) for r in rows] == _pg_rows(conn)
        events = [v for _, v in read_topic(settings, topic) if v]
        history = target.execute(f'SELECT count(*) FROM "{unique}".orders__history').fetchone()
        assert history == (len(events),)  # nothing doubled, nothing missing
        target.close()
