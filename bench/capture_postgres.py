"""Benchmark: PostgreSQL capture into Kafka next to pg_recvlogical and Debezium reading the
same changes.

Each run creates a fresh table and three logical slots at the same point, then writes three
workloads: 1,000,000 inserts (one transaction), 1,000,000 updates (one transaction), and a
mixed workload of small transactions (rows/25 transactions of 3 inserts, 1 update and 1
delete, each committed on its own: 200,000 changes for 1M rows). Three readers read the same
changes, one slot each:

- pg_recvlogical with pgoutput over TCP to /dev/null (the physical limit of the transport);
- ``sluiceway capture run`` (a separate process, as in production) into Kafka with acks=all;
- Debezium's PostgreSQL connector on Kafka Connect standalone (`bench.debezium`), into Kafka
  on the same broker.

Sluiceway's and Debezium's clocks start when each logs that it streams (JVM and interpreter
start-up are not counted); a workload is read when the reader's topic holds its last change
(the topics are fresh: one offset per record). Sluiceway must also have confirmed the last
position to PostgreSQL before the run ends. Peak RSS is the capture process's VmHWM.

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

from bench.debezium import CONFIGURATION, DEBEZIUM, Debezium
from bench.process import (
    TopicCounter,
    drop_topics,
    fresh_database,
    peak_rss_mb,
    start_capture,
    write_spec,
)
from bench.record import Figure, command, rss_budget, summarize
from sluiceway.settings import Settings
from stack.postgres import postgres_bindir

__all__ = ["main"]

DB = "bench_capture"
PUBLICATION = "bench_pub"
BASE_SLOT = "bench_recvlogical"
DEBEZIUM_SLOT = "bench_debezium"
PIPELINE = "benchcapture"
WORKLOADS = ("inserts", "updates", "mixed")
MIXED = """
CREATE PROCEDURE bench_mixed(transactions int, top bigint) LANGUAGE plpgsql AS $$
BEGIN
  FOR i IN 1..transactions LOOP
    INSERT INTO bench SELECT top + i * 3 + k, k, md5(k::text), k / 7.0, now()
      FROM generate_series(0, 2) k;
    UPDATE bench SET a = a + 1 WHERE id = i;
    DELETE FROM bench WHERE id = top - i;
    COMMIT;
  END LOOP;
END $$"""
console = Console()


def _lsn(cur: Any) -> int:
    cur.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
    return int(cur.fetchone()[0])


def _fmt(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def _prepare(settings: Settings, rows: int) -> tuple[Any, dict[str, int]]:
    """Fresh database, table, publication, the three slots; then the workloads. Returns the
    LSN where each workload ends."""
    conn = fresh_database(settings, DB, PIPELINE)
    with conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE bench (id bigint PRIMARY KEY, a int, b text, c numeric(12, 2), "
            "d timestamptz)"
        )
        cur.execute(f"CREATE PUBLICATION {PUBLICATION} FOR TABLE bench")
        cur.execute(MIXED)
        for slot in (BASE_SLOT, f"sluiceway_{PIPELINE}", DEBEZIUM_SLOT):
            cur.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
        cur.execute(
            "INSERT INTO bench SELECT g, g %% 1000, md5(g::text), g / 7.0, "
            "'2024-01-01'::timestamptz + g * interval '1 second' FROM generate_series(1, %s) g",
            (rows,),
        )
        ends = {"inserts": _lsn(cur)}
        cur.execute("UPDATE bench SET a = a + 1")
        ends["updates"] = _lsn(cur)
        cur.execute("SET synchronous_commit = off")  # the writer is not what is measured
        cur.execute("CALL bench_mixed(%s, %s)", (_small(rows), rows))
        ends["mixed"] = _lsn(cur)
    return conn, ends


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


def _small(rows: int) -> int:
    """The mixed workload's transactions: 5 changes each, a fifth as many changes as rows."""
    return rows // 25


def _totals(rows: int) -> dict[str, int]:
    """Records in a reader's topic once each workload is read (one record per change)."""
    return {"inserts": rows, "updates": 2 * rows, "mixed": 2 * rows + _small(rows) * 5}


def _capture(
    settings: Settings, conn: Any, ends: dict[str, int], spec: Path, rows: int
) -> tuple[dict[str, float], float]:
    """Seconds per workload and peak RSS in MiB: from capture's "streaming" log line to the last
    change of each workload in its topic (interpreter start and setup, about a second, are not
    counted: pg_recvlogical has none to speak of)."""
    counter = TopicCounter(settings)
    topic = f"{PIPELINE}.public.bench"
    proc = start_capture(spec, "streaming from slot")
    marks = [time.monotonic()]
    try:
        for total in _totals(rows).values():
            marks.append(counter.wait(topic, total, lambda: proc.poll() is None))
        while _confirmed(conn) < ends["mixed"]:  # and capture confirmed it all to PostgreSQL
            time.sleep(0.05)
        rss = peak_rss_mb(proc.pid)
    finally:
        counter.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return {name: marks[i + 1] - marks[i] for i, name in enumerate(WORKLOADS)}, rss


def _debezium(settings: Settings, directory: Path, rows: int, number: int) -> dict[str, float]:
    """Seconds per workload for Debezium, from its "streaming" log line to the last change of
    each workload in its topic (`_totals`)."""
    prefix = f"benchdbz{number}"
    counter = TopicCounter(settings)
    topic = f"{prefix}.public.bench"
    totals = _totals(rows)
    try:
        with Debezium(
            settings,
            directory / prefix,
            database=DB,
            publication=PUBLICATION,
            slot=DEBEZIUM_SLOT,
            table="public.bench",
            prefix=prefix,
        ) as debezium:
            assert debezium.started is not None
            marks = [debezium.started]
            for name in WORKLOADS:
                marks.append(counter.wait(topic, totals[name], debezium.alive))
    finally:
        counter.close()
        drop_topics(settings, f"{prefix}.")
    return {name: marks[i + 1] - marks[i] for i, name in enumerate(WORKLOADS)}


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
    changes = {"inserts": rows, "updates": rows, "mixed": _small(rows) * 5}
    base: dict[str, list[float]] = {w: [] for w in WORKLOADS}
    ours: dict[str, list[float]] = {w: [] for w in WORKLOADS}
    theirs: dict[str, list[float]] = {w: [] for w in WORKLOADS}
    rss: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        spec = _spec(Path(tmp))
        console.print(f"Sluiceway: {spec.read_text().strip()}\nDebezium: {CONFIGURATION}")
        for number in range(1, runs + 1):
            console.print(
                f"run {number}/{runs}: writing {rows:,} inserts, {rows:,} updates and "
                f"{_small(rows):,} small transactions"
            )
            conn, ends = _prepare(settings, rows)
            for name in WORKLOADS:  # each read starts where the previous one confirmed
                base[name].append(changes[name] / _recvlogical(settings, ends[name]))
            seconds_by, peak = _capture(settings, conn, ends, spec, rows)
            for name in WORKLOADS:
                ours[name].append(changes[name] / seconds_by[name])
            rss.append(peak)
            for name, seconds in _debezium(settings, Path(tmp), rows, number).items():
                theirs[name].append(changes[name] / seconds)
            for name in WORKLOADS:
                console.print(
                    f"  {name}: pg_recvlogical {base[name][-1]:,.0f}, Sluiceway "
                    f"{ours[name][-1]:,.0f}, Debezium {theirs[name][-1]:,.0f} rows/s"
                )
            console.print(f"  capture peak RSS {peak:.0f} MiB")
            conn.close()
    baseline = "pg_recvlogical pgoutput to /dev/null, same changes, TCP"
    debezium = f"{DEBEZIUM}, same changes"
    label = {"inserts": "inserts", "updates": "updates", "mixed": "mixed small transactions"}
    figures = [
        summarize(f"postgres capture {label[w]} rows/s", "rows/s", ours[w], baseline, base[w])
        for w in WORKLOADS
    ]
    figures += [
        summarize(
            f"postgres capture {label[w]} rows/s, next to Debezium",
            "rows/s",
            ours[w],
            debezium,
            theirs[w],
        )
        for w in WORKLOADS
    ]
    figures += [
        rss_budget(f"postgres capture peak RSS, {rows:,}-row transactions", rss),
    ]
    return figures


def main() -> None:
    """Command-line entry: measure and record into docs/benchmarks.json."""
    command(__doc__, run, "rows", 1_000_000)


if __name__ == "__main__":
    main()
