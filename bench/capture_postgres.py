"""Benchmark: PostgreSQL capture into Kafka next to pg_recvlogical reading the same changes.

Each run creates a fresh table and two logical slots at the same point, then writes 1,000,000
inserts (one transaction) and 1,000,000 updates (one transaction). The baseline, pg_recvlogical
with pgoutput over TCP to /dev/null, reads the changes from one slot; ``sluiceway capture run``
(a separate process, as in production) reads them from the other into Kafka with acks=all, and
counts as done when PostgreSQL shows its confirmed position past the last change — that is,
after Kafka acknowledged every event. Peak RSS is the capture process's VmHWM.

    python -m bench.capture_postgres [--rows 1000000] [--runs 3]
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.process import peak_rss_mb, start_capture, write_spec
from bench.record import Figure, command, summarize
from sluiceway.connect import postgres_connection
from sluiceway.settings import Settings
from stack.postgres import postgres_bindir

__all__ = ["main"]

DB = "bench_capture"
PUBLICATION = "bench_pub"
BASE_SLOT = "bench_recvlogical"
PIPELINE = "benchcapture"
console = Console()


def _admin(settings: Settings) -> Any:
    conn = postgres_connection(settings.postgres, database="postgres")
    conn.autocommit = True
    return conn


def _lsn(cur: Any) -> int:
    cur.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
    return int(cur.fetchone()[0])


def _fmt(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def _prepare(settings: Settings, rows: int) -> tuple[Any, int, int]:
    """Fresh database, table, publication, both slots; then the workload. Returns LSNs."""
    admin = _admin(settings)
    with admin.cursor() as cur:
        cur.execute("SELECT slot_name FROM pg_replication_slots WHERE database = %s", (DB,))
        for (slot,) in cur.fetchall():
            cur.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        cur.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        cur.execute(f"CREATE DATABASE {DB}")
    admin.close()
    conn = postgres_connection(settings.postgres, database=DB)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE bench (id bigint PRIMARY KEY, a int, b text, c numeric(12, 2), "
            "d timestamptz)"
        )
        cur.execute(f"CREATE PUBLICATION {PUBLICATION} FOR TABLE bench")
        cur.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (BASE_SLOT,))
        cur.execute(
            "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (f"sluiceway_{PIPELINE}",)
        )
        cur.execute(
            "INSERT INTO bench SELECT g, g %% 1000, md5(g::text), g / 7.0, "
            "'2024-01-01'::timestamptz + g * interval '1 second' FROM generate_series(1, %s) g",
            (rows,),
        )
        inserted = _lsn(cur)
        cur.execute("UPDATE bench SET a = a + 1")
        updated = _lsn(cur)
    return conn, inserted, updated


def _recvlogical(settings: Settings, endpos: int) -> float:
    bindir = postgres_bindir()
    pg = settings.postgres
    start = time.perf_counter()
    subprocess.run(
        [
            str(bindir / "pg_recvlogical" if bindir else "pg_recvlogical"),
            "-d", DB, "-h", pg.host, "-p", str(pg.port), "-U", pg.user,
            "--slot", BASE_SLOT, "--start", "-o", "proto_version=1",
            "-o", f"publication_names={PUBLICATION}", f"--endpos={_fmt(endpos)}",
            "-f", "/dev/null", "--no-loop",
        ],
        env={**os.environ, "PGPASSWORD": pg.password.get_secret_value()},
        check=True,
    )  # fmt: skip
    return time.perf_counter() - start


def _confirmed(conn: Any) -> int:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots "
            "WHERE slot_name = %s",
            (f"sluiceway_{PIPELINE}",),
        )
        return int(cur.fetchone()[0])


def _capture(
    conn: Any, inserted: int, updated: int, spec: Path
) -> tuple[float, float, float, float]:
    """Seconds for the inserts, for the updates, start-up seconds, and peak RSS in MiB.

    The clock starts when capture logs that it streams (interpreter start and setup, about a
    second, are reported apart: pg_recvlogical has none to speak of).
    """
    launched = time.perf_counter()
    proc = start_capture(spec, "streaming from slot")
    start = time.perf_counter()
    marks: dict[int, float] = {}
    try:
        for target in (inserted, updated):
            while _confirmed(conn) < target:
                if proc.poll() is not None:
                    raise RuntimeError(f"capture exited with {proc.returncode}")
                time.sleep(0.02)
            marks[target] = time.perf_counter()
        rss = peak_rss_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return marks[inserted] - start, marks[updated] - marks[inserted], start - launched, rss


def _spec(directory: Path) -> Path:
    return write_spec(
        directory,
        {
            "name": PIPELINE,
            "source": {
                "database": DB,
                "publication": PUBLICATION,
                "tables": {"include": ["public.bench"]},
                "snapshot": "never",
                "status_seconds": 0.05,
            },
            "topics": {"partitions": 3},
        },
    )


def run(settings: Settings, rows: int, runs: int) -> list[Figure]:
    """Measure, print and return the figures."""
    base_ins: list[float] = []
    base_upd: list[float] = []
    cap_ins: list[float] = []
    cap_upd: list[float] = []
    rss: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        spec = _spec(Path(tmp))
        for number in range(1, runs + 1):
            console.print(f"run {number}/{runs}: writing {rows:,} inserts and {rows:,} updates")
            conn, inserted, updated = _prepare(settings, rows)
            base_ins.append(rows / _recvlogical(settings, inserted))
            base_upd.append(rows / _recvlogical(settings, updated))
            ins, upd, startup, peak = _capture(conn, inserted, updated, spec)
            cap_ins.append(rows / ins)
            cap_upd.append(rows / upd)
            rss.append(peak)
            console.print(
                f"  pg_recvlogical {base_ins[-1]:,.0f} / {base_upd[-1]:,.0f} rows/s; "
                f"capture {cap_ins[-1]:,.0f} / {cap_upd[-1]:,.0f} rows/s "
                f"(start-up {startup:.1f} s), peak RSS {peak:.0f} MiB"
            )
            conn.close()
    baseline = "pg_recvlogical pgoutput to /dev/null, same changes, TCP"
    figures = [
        summarize("postgres capture inserts rows/s", "rows/s", cap_ins, baseline, base_ins),
        summarize("postgres capture updates rows/s", "rows/s", cap_upd, baseline, base_upd),
        summarize(
            f"postgres capture peak RSS, {rows:,}-row transactions",
            "MiB",
            rss,
            "300 MiB budget",
            [300.0] * len(rss),
            higher_is_better=False,
        ),
    ]
    return figures


def main() -> None:
    """Command-line entry: measure and record into docs/benchmarks.json."""
    command(__doc__, run, "rows", 1_000_000)


if __name__ == "__main__":
    main()
