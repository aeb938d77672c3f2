"""Benchmark: MariaDB binlog capture into Kafka next to the same changes read raw by the library.

Each run creates a fresh table, notes the binlog position, then writes ``--changes`` changes
(1,000,000 by default; ``make bench`` takes 500,000): half inserts (one transaction), half
updates (one transaction). The baseline is
mysql-replication itself reading those changes from that position and decoding every row,
producing nothing — the ceiling of a Python binlog client on this machine. The candidate is
``sluiceway capture run`` (a separate process, as in production) streaming the same changes
into Kafka with acks=all from the same position; it counts as done when its saved position (the
end of the last transaction Kafka fully acknowledged) reaches the end of the workload. Peak RSS
is the capture process's VmHWM.

    python -m bench.capture_mysql [--changes 1000000] [--runs 3]
"""

from __future__ import annotations

import signal
import tempfile
import time
from pathlib import Path

from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import UpdateRowsEvent, WriteRowsEvent
from rich.console import Console

from bench.process import peak_rss_mb, start_capture, write_spec
from bench.record import Figure, command, rss_budget, summarize
from sluiceway.connect import mariadb_connection
from sluiceway.settings import Settings
from streaming.sources.mysql.capture import BinlogPosition, encode_position

__all__ = ["main"]

DB = "bench_binlog"
PIPELINE = "benchbinlog"
SERVER_ID = 4242
console = Console()


def _prepare(settings: Settings, changes: int) -> tuple[BinlogPosition, int]:
    """A fresh table, then the workload; returns the start position and the encoded end."""
    conn = mariadb_connection(settings.mariadb, database="mysql", autocommit=True)
    half = changes // 2
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {DB}")
        cur.execute(f"CREATE DATABASE {DB}")
        cur.execute(
            f"CREATE TABLE {DB}.bench (id BIGINT PRIMARY KEY, a INT, b VARCHAR(32), "
            "c DECIMAL(12,2), d DATETIME(6))"
        )
        cur.execute("SHOW MASTER STATUS")
        file, pos = cur.fetchone()[:2]
        cur.execute(
            f"INSERT INTO {DB}.bench SELECT seq, seq % 1000, md5(seq), seq / 7, "
            f"'2024-01-01' + INTERVAL seq SECOND FROM seq_1_to_{half}"
        )
        cur.execute(f"UPDATE {DB}.bench SET a = a + 1")
        cur.execute("SHOW MASTER STATUS")
        end_file, end_pos = cur.fetchone()[:2]
    conn.close()
    start = BinlogPosition(str(file), int(pos), True, SERVER_ID)
    return start, encode_position(str(end_file), int(end_pos))


def _raw(settings: Settings, start: BinlogPosition, end: int) -> tuple[float, int]:
    """mysql-replication alone: read and decode every row from ``start`` to ``end``."""
    db = settings.mariadb
    stream = BinLogStreamReader(
        connection_settings={
            "host": db.host,
            "port": db.port,
            "user": db.user,
            "password": db.password.get_secret_value(),
        },
        server_id=SERVER_ID + 1,
        resume_stream=True,
        blocking=False,
        log_file=start.file,
        log_pos=start.pos,
        only_events=[WriteRowsEvent, UpdateRowsEvent],
        only_schemas=[DB],
        enable_logging=False,
    )
    rows = 0
    began = time.perf_counter()
    try:
        for event in stream:
            rows += len(event.rows)
            if encode_position(stream.log_file, stream.log_pos) >= end:
                break
    finally:
        stream.close()
    return time.perf_counter() - began, rows


def _capture(
    settings: Settings, spec: Path, start: BinlogPosition, end: int
) -> tuple[float, float]:
    """Seconds from 'streaming' to the saved position reaching ``end``; peak RSS in MiB."""
    state = BinlogPosition.path(settings.state_dir, PIPELINE)
    start.save(state)  # resume exactly where the workload began (no snapshot)
    proc = start_capture(spec, "streaming ")
    try:
        began = time.perf_counter()
        while True:
            saved = BinlogPosition.load(state)
            if saved is not None and encode_position(saved.file, saved.pos) >= end:
                break
            if proc.poll() is not None:
                raise RuntimeError(f"capture exited with {proc.returncode}")
            time.sleep(0.02)
        elapsed = time.perf_counter() - began
        rss = peak_rss_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return elapsed, rss


def _spec(directory: Path) -> Path:
    return write_spec(
        directory,
        {
            "name": PIPELINE,
            "source": {
                "kind": "mysql",
                "database": DB,
                "tables": {"include": [f"{DB}.bench"]},
                "snapshot": "never",
                "server_id": SERVER_ID,
                "status_seconds": 0.05,
            },
            "topics": {"partitions": 3},
        },
    )


def run(settings: Settings, changes: int, runs: int) -> list[Figure]:
    """Measure, print and return the figures."""
    raw: list[float] = []
    captured: list[float] = []
    rss: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        spec = _spec(Path(tmp))
        for number in range(1, runs + 1):
            console.print(f"run {number}/{runs}: writing {changes:,} changes")
            start, end = _prepare(settings, changes)
            seconds, rows = _raw(settings, start, end)
            if rows != changes:
                raise RuntimeError(f"the library read {rows:,} rows, not {changes:,}")
            raw.append(rows / seconds)
            seconds, peak = _capture(settings, spec, start, end)
            captured.append(changes / seconds)
            rss.append(peak)
            console.print(
                f"  library raw {raw[-1]:,.0f} rows/s; capture into Kafka {captured[-1]:,.0f} "
                f"rows/s, peak RSS {peak:.0f} MiB"
            )
    baseline = "mysql-replication reading and decoding the same changes, producing nothing"
    figures = [
        summarize(
            f"binlog capture rows/s (MariaDB, {changes:,} changes)",
            "rows/s",
            captured,
            baseline,
            raw,
        ),
        rss_budget("binlog capture peak RSS", rss),
    ]
    return figures


def main() -> None:
    """Command-line entry: measure and record into docs/benchmarks.json."""
    command(__doc__, run, "changes", 1_000_000)


if __name__ == "__main__":
    main()
