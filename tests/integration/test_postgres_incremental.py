"""Incremental re-snapshots (DBLog watermarks) on a live pipeline reconcile exactly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
import yaml

from sluiceway.connect import postgres_connection
from sluiceway.settings import Settings
from stack.manager import Stack
from streaming.sources.postgres.incremental import request_snapshot
from streaming.sources.postgres.state import CaptureState
from tests.integration.capture_support import (
    capture_running,
    make_pipeline,
    read_topic,
    rebuild_state,
    temporary_database,
    wait_caught_up,
)
from tests.integration.conftest import require
from tests.integration.test_postgres_capture import _source_rows, _workload

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TABLE = "CREATE TABLE accounts (id int PRIMARY KEY, name text, amount numeric(20, 3), note text)"
SEED = "INSERT INTO accounts SELECT g, 'seed' || g, g * 1.5, NULL FROM generate_series(1, %s) g"


def test_incremental_snapshot_during_writes_reconciles(
    settings: Settings, stack: Stack, unique: str
) -> None:
    require(stack, "postgres")
    with temporary_database(settings, unique) as conn:
        with conn.cursor() as cur:
            cur.execute(TABLE)
            cur.execute(SEED, (5000,))
        # No initial snapshot: the seed rows reach Kafka only through the incremental one.
        pipeline = make_pipeline(unique, snapshot="never", snapshot_chunk_rows=250)
        writer_conn = postgres_connection(settings.postgres, database=unique)
        writer_conn.autocommit = True
        with capture_running(settings, pipeline) as capture:
            wait_caught_up(capture, conn)
            writer = threading.Thread(target=_workload, args=(writer_conn, "accounts", 1500, 5))
            writer.start()
            request_snapshot(conn, ["public.accounts"])
            writer.join()
            deadline = time.monotonic() + 120
            while _incremental_pending(settings, unique) or capture.stats.incremental_rows == 0:
                assert time.monotonic() < deadline, "the incremental snapshot did not finish"
                assert capture.error is None, capture.error
                time.sleep(0.2)
            wait_caught_up(capture, conn)
        writer_conn.close()
        records = read_topic(settings, f"{unique}.public.accounts")
        snapshots = [orjson.loads(v) for _, v in records if v and orjson.loads(v)["op"] == "r"]
        assert snapshots and {e["source"]["snapshot"] for e in snapshots} == {"incremental"}
        assert rebuild_state(records) == _source_rows(conn, "accounts")


def _incremental_pending(settings: Settings, name: str) -> bool:
    state = CaptureState.load(CaptureState.path(settings.state_dir, name))
    return state is None or state.incremental is not None


def test_incremental_snapshot_resumes_after_kill_9(
    settings: Settings, stack: Stack, unique: str, tmp_path: Path
) -> None:
    require(stack, "postgres")
    spec = tmp_path / f"{unique}.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": unique,
                "source": {
                    "database": unique,
                    "snapshot": "never",
                    "snapshot_chunk_rows": 100,
                    "heartbeat_seconds": 0.5,
                    "status_seconds": 0.2,
                },
                "topics": {"partitions": 3},
            }
        )
    )
    log = tmp_path / "capture.log"

    def start() -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "sluiceway.cli", "capture", "run", str(spec)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    state_file = CaptureState.path(settings.state_dir, unique)
    with temporary_database(settings, unique) as conn:
        with conn.cursor() as cur:
            cur.execute(TABLE)
            cur.execute(SEED, (60000,))
        proc = start()
        deadline = time.monotonic() + 30
        while CaptureState.load(state_file) is None:  # streaming has begun
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.05)
        subprocess.run(
            [sys.executable, "-m", "sluiceway.cli", "capture", "snapshot", str(spec),
             "--table", "public.accounts"],
            check=True, capture_output=True,
        )  # fmt: skip
        # Kill once some chunks are confirmed, but not all.
        deadline = time.monotonic() + 60
        while True:
            state = CaptureState.load(state_file)
            if state is not None and state.incremental and state.incremental["last_key"]:
                break
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        resumed_from = int(state.incremental["last_key"][0])
        assert 0 < resumed_from < 60000
        with conn.cursor() as cur:
            cur.execute("UPDATE accounts SET note = 'after kill' WHERE id % 97 = 0")
            cur.execute("DELETE FROM accounts WHERE id % 101 = 0")
        proc = start()
        deadline = time.monotonic() + 120
        while (s := CaptureState.load(state_file)) is None or s.incremental is not None:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]
        records = read_topic(settings, f"{unique}.public.accounts")
        assert rebuild_state(records) == _source_rows(conn, "accounts")
