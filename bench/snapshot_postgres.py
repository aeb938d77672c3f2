"""Benchmark: the initial snapshot of a PostgreSQL table into Kafka, next to ``COPY ... TO
STDOUT`` of the same table and Debezium's initial snapshot; and how the workers' memory grows
with the table.

Each run fills a fresh table (the capture benchmark's shape) and measures, on the full size:

- ``COPY bench TO STDOUT`` through psycopg2 into nothing (the physical limit of reading it);
- ``sluiceway capture run`` with ``snapshot: initial`` (its own process), from its log line
  that the slot was created to the last row in its topic;
- Debezium's PostgreSQL connector with ``snapshot.mode=initial`` (`bench.debezium`), from its
  "Snapshot step 1" log line to the last row in its topic.

Memory: the capture process's peak RSS for a tenth of the table and for the whole of it, and
the same for ``sluiceway load window`` loading that topic into DuckDB (peak RSS of the
process, from the kernel's accounting when it exits). Flat means the two are close.

    python -m bench.snapshot_postgres [--rows 1000000] [--runs 3]
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.debezium import DEBEZIUM, Debezium
from bench.process import (
    TopicCounter,
    drop_topics,
    fresh_database,
    peak_rss_mb,
    start_capture,
    write_spec,
)
from bench.record import Figure, command, rss_budget, summarize
from sluiceway.connect import postgres_connection
from sluiceway.settings import Settings

__all__ = ["main"]

DB = "bench_snapshot"
PUBLICATION = "bench_snapshot_pub"
PIPELINE = "benchsnap"
TOPIC = f"{PIPELINE}.public.bench"
console = Console()


def _fill(settings: Settings, rows: int) -> None:
    conn = fresh_database(settings, DB, PIPELINE)
    with conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE bench (id bigint PRIMARY KEY, a int, b text, c numeric(12, 2), "
            "d timestamptz)"
        )
        cur.execute(
            "INSERT INTO bench SELECT g, g %% 1000, md5(g::text), g / 7.0, "
            "'2024-01-01'::timestamptz + g * interval '1 second' FROM generate_series(1, %s) g",
            (rows,),
        )
        cur.execute("VACUUM ANALYZE bench")
        cur.execute(f"CREATE PUBLICATION {PUBLICATION} FOR TABLE bench")
    conn.close()


class _Nothing:
    """A file that keeps nothing (COPY's output)."""

    def write(self, data: Any) -> int:
        return len(data)


def _copy_to(settings: Settings) -> float:
    conn = postgres_connection(settings.postgres, database=DB)
    try:
        with conn.cursor() as cur:
            start = time.perf_counter()
            cur.copy_expert("COPY bench TO STDOUT", _Nothing())
            return time.perf_counter() - start
    finally:
        conn.close()


def _spec(directory: Path) -> Path:
    return write_spec(
        directory,
        {
            "name": PIPELINE,
            "source": {
                "database": DB,
                "publication": PUBLICATION,
                "tables": {"include": ["public.bench"]},
                "snapshot": "initial",
            },
            "topics": {"partitions": 3},
            "targets": [
                {"kind": "duckdb", "path": str(directory / "snapshot.duckdb"), "mode": "current"}
            ],
        },
    )


def _snapshot(settings: Settings, spec: Path, rows: int) -> tuple[float, float]:
    """Seconds from the slot's creation to the last row in Kafka; capture's peak RSS (MiB)."""
    counter = TopicCounter(settings)
    proc = start_capture(spec, "created slot")
    start = time.monotonic()
    try:
        done = counter.wait(TOPIC, rows, lambda: proc.poll() is None)
        rss = peak_rss_mb(proc.pid)
    finally:
        counter.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return done - start, rss


def _load(spec: Path, directory: Path) -> float:
    """``sluiceway load window`` of the whole topic into DuckDB; the process's peak RSS (MiB)."""
    (directory / "snapshot.duckdb").unlink(missing_ok=True)
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "sluiceway.cli", "load", "window", str(spec),
            "--from", "2000-01-01T00:00:00+00:00", "--to", "2100-01-01T00:00:00+00:00",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        assert proc.stderr is not None
        raise RuntimeError(f"load window failed: {proc.stderr.read().decode()[-2000:]}")
    return usage.ru_maxrss / 1024


def _debezium(settings: Settings, directory: Path, rows: int, number: int) -> float:
    prefix = f"benchdbzsnap{number}"
    counter = TopicCounter(settings)
    try:
        with Debezium(
            settings,
            directory / prefix,
            database=DB,
            publication=PUBLICATION,
            slot=f"bench_debezium_snap{number}",
            table="public.bench",
            prefix=prefix,
            snapshot=True,
        ) as debezium:
            assert debezium.started is not None
            done = counter.wait(f"{prefix}.public.bench", rows, debezium.alive)
            return done - debezium.started
    finally:
        counter.close()
        drop_topics(settings, f"{prefix}.")


def run(settings: Settings, rows: int, runs: int) -> list[Figure]:
    """Measure, print and return the figures."""
    small = rows // 10
    copy: list[float] = []
    ours: list[float] = []
    theirs: list[float] = []
    rss: dict[str, dict[int, list[float]]] = {"capture": {}, "load": {}}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        spec = _spec(directory)
        for number in range(1, runs + 1):
            for size in (small, rows):
                console.print(f"run {number}/{runs}: a {size:,}-row table")
                _fill(settings, size)
                if size == rows:
                    copy.append(rows / _copy_to(settings))
                seconds, peak = _snapshot(settings, spec, size)
                rss["capture"].setdefault(size, []).append(peak)
                rss["load"].setdefault(size, []).append(_load(spec, directory))
                console.print(
                    f"  snapshot {size / seconds:,.0f} rows/s, capture peak RSS {peak:.0f} MiB, "
                    f"load peak RSS {rss['load'][size][-1]:.0f} MiB"
                )
                if size == rows:
                    ours.append(rows / seconds)
                    theirs.append(rows / _debezium(settings, directory, rows, number))
                    console.print(
                        f"  COPY TO {copy[-1]:,.0f} rows/s, Debezium {theirs[-1]:,.0f} rows/s"
                    )
    figures = [
        summarize(
            f"postgres snapshot rows/s ({rows:,}-row table)",
            "rows/s",
            ours,
            "COPY ... TO STDOUT of the same table through psycopg2",
            copy,
        ),
        summarize(
            f"postgres snapshot rows/s ({rows:,}-row table), next to Debezium",
            "rows/s",
            ours,
            f"{DEBEZIUM}, its initial snapshot of the same table",
            theirs,
        ),
    ]
    for worker, label in (("capture", "snapshot capture"), ("load", "duckdb load window")):
        figures.append(rss_budget(f"{label} peak RSS, {rows:,}-row table", rss[worker][rows]))
        figures.append(
            summarize(
                f"{label} peak RSS growth, {small:,} -> {rows:,} rows",
                "MiB",
                rss[worker][rows],
                f"the same worker's peak RSS for a {small:,}-row table",
                rss[worker][small],
                higher_is_better=False,
            )
        )
    return figures


def main() -> None:
    """Command-line entry: measure and record into docs/benchmarks.json."""
    command(__doc__, run, "rows", 1_000_000)


if __name__ == "__main__":
    main()
