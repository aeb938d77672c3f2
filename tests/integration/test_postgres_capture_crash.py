"""kill -9 of the capture process at random moments loses no change."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from sluiceway.connect import postgres_connection
from sluiceway.settings import Settings
from stack.manager import Stack
from streaming.sources.postgres.state import CaptureState
from tests.integration.capture_support import read_topic, rebuild_state, temporary_database
from tests.integration.conftest import require
from tests.integration.test_postgres_capture import _source_rows, _workload

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _start(spec: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "sluiceway.cli", "capture", "run", str(spec)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _confirmed(conn: Any, slot: str) -> int:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT COALESCE(confirmed_flush_lsn - '0/0'::pg_lsn, 0), pg_current_wal_lsn() - "
            "'0/0'::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
            (slot,),
        )
        row = cur.fetchone()
    return -1 if row is None else int(row[0])


def test_kill_9_at_random_moments_then_resume_reconciles(
    settings: Settings, stack: Stack, unique: str, tmp_path: Path
) -> None:
    require(stack, "postgres")
    require(stack, "kafka")
    spec = tmp_path / f"{unique}.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": unique,
                "source": {
                    "database": unique,
                    "tables": {"include": ["public.*"]},
                    "snapshot_chunk_rows": 5000,
                    "heartbeat_seconds": 0.5,
                    "status_seconds": 0.2,
                },
                "topics": {"partitions": 3},
            }
        )
    )
    log = tmp_path / "capture.log"
    rng = random.Random(11)
    with temporary_database(settings, unique) as conn:
        with conn.cursor() as cur:
            cur.execute(
                "CREATE TABLE accounts (id int PRIMARY KEY, name text, amount numeric(20, 3), "
                "note text)"
            )
            cur.execute(
                "INSERT INTO accounts SELECT g, 'seed' || g, g * 1.5, NULL "
                "FROM generate_series(1, 60000) g"
            )
        writer_conn = postgres_connection(settings.postgres, database=unique)
        writer_conn.autocommit = True
        writer = threading.Thread(target=_workload, args=(writer_conn, "accounts", 6000, 3))
        writer.start()
        # The first kill lands mid-snapshot (the state file says it is under way).
        state_file = CaptureState.path(settings.state_dir, unique)
        proc = _start(spec, log)
        deadline = time.monotonic() + 30
        while (state := CaptureState.load(state_file)) is None or state.snapshot_done:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        kills = 1
        # The others at random moments while streaming (or re-reading the snapshot).
        for delay in (rng.uniform(1, 3), rng.uniform(1, 3), rng.uniform(0.5, 2)):
            proc = _start(spec, log)
            time.sleep(delay)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            kills += 1
        writer.join()
        writer_conn.close()

        # The slot may already be confirmed past the last change (the killed processes streamed
        # it all): wait until this process streams (its SIGTERM handler is set before that), or
        # the SIGTERM below could reach it while it is still starting up.
        started = log.read_text().count("streaming from slot")
        proc = _start(spec, log)
        deadline = time.monotonic() + 60
        while log.read_text().count("streaming from slot") == started:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        with conn.cursor() as cur:
            cur.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
            target = int(cur.fetchone()[0])
        deadline = time.monotonic() + 120
        while _confirmed(conn, f"sluiceway_{unique}") < target:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]
        assert kills == 4
        assert "initial snapshot of" in log.read_text()  # the interrupted snapshot was redone

        records = read_topic(settings, f"{unique}.public.accounts")
        assert rebuild_state(records) == _source_rows(conn, "accounts")
