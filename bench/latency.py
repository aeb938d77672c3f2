"""Benchmark: end-to-end latency, a commit in PostgreSQL to the row present in the DuckDB
current-state table, at steady rates.

The pipeline runs as in production: ``sluiceway capture run`` and ``sluiceway load run`` (DuckDB,
current state, 0.1 s micro-batches) in their own processes. The workload commits one transaction
every 10 ms, each inserting rate/100 rows whose ``written_at`` is PostgreSQL's
``clock_timestamp()`` at the insert — the time is written by the workload, inside the transaction,
so it is a little before the commit and the latency is overstated, never understated. An observer
process attaches the DuckDB file read-only every 100 ms (between the loader's batches: the sink
holds the file only while it writes, and leaves it free for 10 ms between batches that come back to
back; while the loader holds it, the observer tries again every 5 ms, as a reader that wants fresh
rows would) and reads the rows that appeared; a row's latency is the observation time minus its
``written_at`` — up to one observation interval late.
A consumer in this process also reads the change topic, so capture's share (commit to the event
readable in Kafka) is reported beside the whole.

One pipeline session per run: a 5 s warm-up that is not counted, then ``--seconds`` (60) at
each rate in turn; each figure is p50/p99/max over every row written at that rate, over three
runs.

    python -m bench.latency [--seconds 60] [--runs 3]
"""

from __future__ import annotations

import multiprocessing
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
from confluent_kafka import Consumer
from rich.console import Console

from bench.process import fresh_database, start_capture, write_spec
from bench.record import Figure, command, summarize
from loaders.duckdb.sink import attached
from sluiceway.connect import postgres_connection
from sluiceway.errors import SinkUnavailable
from sluiceway.settings import Settings

__all__ = ["main"]

DB = "bench_latency"
PIPELINE = "benchlat"
RATES = (2_000, 10_000)
WARMUP = 5.0
TICK = 0.01
LOOK = 0.1  # how often the observer reads the DuckDB table
RETRY = 0.005  # how soon it tries again while the loader holds the file
console = Console()


def _prepare(settings: Settings, directory: Path) -> Path:
    conn = fresh_database(settings, DB, PIPELINE)
    with conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE events (id bigint PRIMARY KEY, payload text, amount numeric(12, 2), "
            "written_at timestamptz NOT NULL)"
        )
    conn.close()
    warehouse = directory / "latency.duckdb"
    warehouse.unlink(missing_ok=True)
    return write_spec(
        directory,
        {
            "name": PIPELINE,
            "source": {
                "database": DB,
                "tables": {"include": ["public.events"]},
                "snapshot": "initial",
                "status_seconds": 0.1,
            },
            "topics": {"partitions": 3},
            "targets": [
                {"kind": "duckdb", "path": str(warehouse), "mode": "current", "batch_seconds": 0.1}
            ],
        },
    )


def _write(
    settings: Settings, rate: int, seconds: float, stop: threading.Event, after: int = 0
) -> int:
    """Commit rate/100 rows every 10 ms for ``seconds``, ids after ``after``; the last id."""
    conn = postgres_connection(settings.postgres, database=DB)
    conn.autocommit = True
    per_tick = rate // round(1 / TICK)
    last = after
    try:
        with conn.cursor() as cur:
            started = time.monotonic()
            tick = 0
            while not stop.is_set() and time.monotonic() - started < seconds:
                cur.execute(
                    "INSERT INTO events SELECT g, md5(g::text), g / 7.0, clock_timestamp() "
                    "FROM generate_series(%s, %s) g",
                    (last + 1, last + per_tick),
                )
                last += per_tick
                tick += 1
                pause = started + tick * TICK - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
    finally:
        conn.close()
    return last


def _observe(warehouse: Path, stop: Any, count: Any, results: Any) -> None:
    """The observer, in a process of its own (a reader thread in this process waits on the
    GIL behind the Kafka watcher and the workload, and misses the loader's gaps between
    batches). Every 100 ms: the rows that appeared, with their latency in seconds; ``count``
    says how many so far, and ``results`` gets ``(seen, errors)`` once ``stop`` is set. Rows
    of different partitions can land in different batches out of id order, so each look reads
    from the highest id below which every row has been seen."""
    seen: dict[int, float] = {}
    errors: list[str] = []
    contiguous = 0
    pause = LOOK
    while not stop.is_set():
        time.sleep(pause)
        try:
            with attached(warehouse, wait=0) as conn:
                rows = conn.execute(
                    f"SELECT id, epoch_us(written_at) FROM {PIPELINE}.events WHERE id > ?",
                    [contiguous],
                ).fetchall()
        except SinkUnavailable:  # not created yet, or the loader is writing: look again soon
            pause = RETRY
            continue
        except duckdb.CatalogException:
            rows = []
        except duckdb.Error as exc:
            errors.append(str(exc))
            rows = []
        pause = LOOK
        now = time.time()
        for key, written in rows:
            if key not in seen:
                seen[key] = now - written / 1e6
        while contiguous + 1 in seen:
            contiguous += 1
        count.value = len(seen)
    results.put((seen, errors))


def _watch_kafka(
    settings: Settings, stop: threading.Event, seen: dict[int, float], ready: threading.Event
) -> None:
    """The same latency up to the change topic: when a consumer here first reads each row's
    event (capture's share of the end-to-end latency)."""
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"sluiceway.bench.latency.{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        }
    )
    consumer.subscribe([f"{PIPELINE}.public.events"], on_assign=lambda *_: ready.set())
    try:
        while not stop.is_set():
            for message in consumer.consume(1000, timeout=0.05):
                if message.error() is not None or message.value() is None:
                    continue
                now = time.time()
                after = orjson.loads(message.value()).get("after") or {}
                written = datetime.fromisoformat(after["written_at"]).timestamp()
                seen.setdefault(int(after["id"]), now - written)
    finally:
        consumer.close()


def _loader(spec: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "sluiceway.cli", "load", "run", str(spec)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _one(settings: Settings, directory: Path, seconds: float) -> dict[int, dict[str, float]]:
    """One pipeline session: a warm-up, then ``seconds`` at each rate in turn; the latency
    figures of each rate's rows."""
    spec = _prepare(settings, directory)
    warehouse = directory / "latency.duckdb"
    capture = start_capture(spec, "streaming from slot")
    loader = _loader(spec)
    stop = threading.Event()
    spawn = multiprocessing.get_context("spawn")
    observed, count, results = spawn.Event(), spawn.Value("q", 0), spawn.Queue()
    observer = spawn.Process(target=_observe, args=(warehouse, observed, count, results))
    observer.start()
    in_kafka: dict[int, float] = {}
    assigned = threading.Event()
    kafka = threading.Thread(target=_watch_kafka, args=(settings, stop, in_kafka, assigned))
    kafka.start()
    assigned.wait(30)
    ranges: dict[int, range] = {}
    try:
        last = _write(settings, RATES[0], WARMUP, stop)
        for rate in RATES:
            console.print(f"  {rate:,} changes/s for {seconds:g} s")
            first, last = last, _write(settings, rate, seconds, stop, after=last)
            ranges[rate] = range(first + 1, last + 1)
        deadline = time.monotonic() + 120
        while count.value < last:
            if time.monotonic() > deadline or capture.poll() is not None or loader.poll():
                break
            time.sleep(0.1)
    finally:
        stop.set()
        observed.set()
        seen, errors = results.get(timeout=60) if observer.is_alive() else ({}, ["observer died"])
        observer.join(30)
        kafka.join(30)
        for proc in (loader, capture):
            proc.send_signal(signal.SIGTERM)
        for proc in (loader, capture):
            proc.wait(60)
    if len(seen) < last:
        raise RuntimeError(f"{last - len(seen):,} rows never reached DuckDB; {errors[-3:]}")
    figures = {}
    for rate, ids in ranges.items():
        measured = [seen[i] for i in ids]
        captured = [in_kafka[i] for i in ids if i in in_kafka]
        figures[rate] = {
            "p50": _percentile(measured, 0.50),
            "p99": _percentile(measured, 0.99),
            "max": max(measured),
            "kafka p50": _percentile(captured, 0.50),
            "kafka p99": _percentile(captured, 0.99),
        }
    return figures


def run(settings: Settings, seconds: int, runs: int) -> list[Figure]:
    """Measure, print and return the figures."""
    results: dict[int, list[dict[str, float]]] = {rate: [] for rate in RATES}
    with tempfile.TemporaryDirectory() as tmp:
        for number in range(1, runs + 1):
            console.print(f"run {number}/{runs}")
            for rate, result in _one(settings, Path(tmp), seconds).items():
                results[rate].append(result)
                console.print(
                    f"  {rate:,} changes/s: p50 {result['p50'] * 1000:,.0f} ms, p99 "
                    f"{result['p99'] * 1000:,.0f} ms, max {result['max'] * 1000:,.0f} ms; in "
                    f"Kafka: p50 {result['kafka p50'] * 1000:,.0f} ms, "
                    f"p99 {result['kafka p99'] * 1000:,.0f} ms"
                )
    figures = []
    for rate in RATES:
        for stat, goal in (("p50", 1.0), ("p99", 1.0), ("max", 1.0), ("kafka p99", 1.0)):
            values = [r[stat] * 1000 for r in results[rate]]
            where = "Kafka (capture's share)" if stat.startswith("kafka") else "DuckDB row"
            figures.append(
                summarize(
                    f"e2e latency {stat.split()[-1]}, commit -> {where}, {rate:,} changes/s",
                    "ms",
                    values,
                    "goal: 1 s",
                    [goal * 1000] * len(values),
                    higher_is_better=False,
                )
            )
    return figures


def main() -> None:
    """Command-line entry: measure and record into docs/benchmarks.json."""
    command(__doc__, run, "seconds", 60)


if __name__ == "__main__":
    main()
