"""Benchmark: loading change events into current-state tables next to a raw bulk load.

1,000,000 insert events (the envelope capture writes) are produced once to a 3-partition
topic. Each run then loads them with the loader (``load_window``, current-state mode: staging,
position guard, delete guards, offsets) into a fresh table, and bulk-loads the same rows raw:
DuckDB from an Arrow table, PostgreSQL with COPY. Rates are rows per second of wall time,
reading from Kafka included for the loader (the raw loads start from rows in memory).

    python -m bench.load [--rows 1000000] [--runs 3] [--targets duckdb postgres]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
from confluent_kafka import Producer
from rich.console import Console

from bench.record import Figure, record, summarize
from loaders.duckdb import DuckDBSink
from loaders.postgres import PostgresSink
from loaders.runner import Loader
from sluiceway.connect import kafka_admin, postgres_connection
from sluiceway.pipeline import Pipeline, PostgresSource, TopicSettings
from sluiceway.settings import Settings, load_settings
from streaming.events import ColumnSchema, TableSchema
from streaming.kafka.topics import ensure_topics

__all__ = ["main"]

PREFIX = "benchload"
console = Console()
SCHEMA = TableSchema(
    "public",
    "items",
    (
        ColumnSchema("id", "int64", "int8", key=True),
        ColumnSchema("name", "string", "text"),
        ColumnSchema("amount", "decimal", "numeric(12,2)", precision=12, scale=2),
        ColumnSchema("created", "timestamptz", "timestamptz"),
        ColumnSchema("flag", "boolean", "bool"),
    ),
)
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


def _row(i: int) -> dict[str, Any]:
    created = EPOCH + timedelta(seconds=i)
    return {
        "id": i,
        "name": f"item-{i}",
        "amount": f"{i % 100000}.{i % 100:02d}",
        "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "flag": i % 2 == 0,
    }


def _produce(settings: Settings, rows: int) -> None:
    admin = kafka_admin(settings.kafka)
    topic = f"{PREFIX}.public.items"
    existing = admin.list_topics(timeout=10).topics
    if topic in existing:
        admin.delete_topics([topic, f"{PREFIX}.schemas"])[topic].result(30)
        time.sleep(2)
    ensure_topics(admin, [topic], TopicSettings(partitions=3))
    ensure_topics(
        admin, [f"{PREFIX}.schemas"], TopicSettings(cleanup_policy="compact"), partitions=1
    )
    producer = Producer(
        {**settings.kafka.client_config(), "linger.ms": 50, "compression.type": "lz4"}
    )
    producer.produce(
        f"{PREFIX}.schemas", orjson.dumps(SCHEMA.to_json()), orjson.dumps({"id": SCHEMA.id})
    )
    source = {
        "connector": "postgresql",
        "schema": "public",
        "table": "items",
        "schema_id": SCHEMA.id,
    }
    for i in range(1, rows + 1):
        envelope = {
            "before": None,
            "after": _row(i),
            "source": {**source, "commit_lsn": i, "lsn": i},
            "op": "c",
            "ts_ms": 0,
        }
        while True:
            try:
                producer.produce(topic, orjson.dumps(envelope), orjson.dumps({"id": i}))
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(120)


def _pipeline() -> Pipeline:
    return Pipeline(name=PREFIX, source=PostgresSource(), topics=TopicSettings(partitions=3))


def _load(settings: Settings, sink: Any) -> float:
    loader = Loader(settings, _pipeline(), sink, mode="current", batch_rows=100_000)
    start = time.perf_counter()
    loaded = loader.load_window(0, int(time.time() * 1000) + 3_600_000)
    elapsed = time.perf_counter() - start
    return loaded / elapsed


def _typed(rows: int) -> dict[str, list[Any]]:
    data: dict[str, list[Any]] = {c.name: [] for c in SCHEMA.columns}
    for i in range(1, rows + 1):
        data["id"].append(i)
        data["name"].append(f"item-{i}")
        data["amount"].append(Decimal(f"{i % 100000}.{i % 100:02d}"))
        data["created"].append(EPOCH + timedelta(seconds=i))
        data["flag"].append(i % 2 == 0)
    return data


def _duckdb_raw(arrow: pa.Table, directory: Path, rows: int) -> float:
    conn = duckdb.connect(str(directory / "raw.duckdb"))
    conn.execute("DROP TABLE IF EXISTS items")
    conn.execute(
        "CREATE TABLE items (id BIGINT, name VARCHAR, amount DECIMAL(12,2), "
        "created TIMESTAMP WITH TIME ZONE, flag BOOLEAN)"
    )
    conn.register("source", arrow)
    start = time.perf_counter()
    conn.execute("INSERT INTO items SELECT * FROM source")
    elapsed = time.perf_counter() - start
    conn.close()
    return rows / elapsed


def _postgres_raw(settings: Settings, text: str, rows: int) -> float:
    conn = postgres_connection(settings.postgres, database="bench_load")
    with conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS raw_items")
        cur.execute(
            "CREATE TABLE raw_items (id bigint PRIMARY KEY, name text, amount numeric(12,2), "
            "created timestamptz, flag boolean)"
        )
        conn.commit()
        start = time.perf_counter()
        cur.copy_expert("COPY raw_items FROM STDIN", io.StringIO(text))
        conn.commit()
        elapsed = time.perf_counter() - start
    conn.close()
    return rows / elapsed


def _postgres_database(settings: Settings) -> None:
    admin = postgres_connection(settings.postgres, database="postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS bench_load WITH (FORCE)")
        cur.execute("CREATE DATABASE bench_load")
    admin.close()


def run(settings: Settings, rows: int, runs: int, targets: list[str]) -> list[Figure]:
    """Measure, print and return the figures."""
    console.print(f"producing {rows:,} change events")
    _produce(settings, rows)
    typed = _typed(rows)
    arrow = pa.table(
        {
            "id": pa.array(typed["id"], pa.int64()),
            "name": pa.array(typed["name"], pa.string()),
            "amount": pa.array(typed["amount"], pa.decimal128(12, 2)),
            "created": pa.array(typed["created"], pa.timestamp("us", tz="UTC")),
            "flag": pa.array(typed["flag"], pa.bool_()),
        }
    )
    copy_text = "".join(
        f"{i}\titem-{i}\t{a}\t{c.isoformat()}\t{'t' if f else 'f'}\n"
        for i, a, c, f in zip(
            typed["id"], typed["amount"], typed["created"], typed["flag"], strict=True
        )
    )
    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        if "duckdb" in targets:
            loads, raws = [], []
            for number in range(runs):
                raws.append(_duckdb_raw(arrow, directory, rows))
                path = directory / f"load{number}.duckdb"
                sink = DuckDBSink(path, PREFIX)
                loads.append(_load(settings, sink))
                sink.close()
                console.print(f"duckdb: loader {loads[-1]:,.0f} rows/s, raw {raws[-1]:,.0f} rows/s")
            figures.append(
                summarize(
                    "duckdb load rows/s", "rows/s", loads, "raw DuckDB insert from Arrow", raws
                )
            )
        if "postgres" in targets:
            loads, raws = [], []
            for _ in range(runs):
                _postgres_database(settings)
                raws.append(_postgres_raw(settings, copy_text, rows))
                sink = PostgresSink(settings.postgres, "bench_load", PREFIX)
                loads.append(_load(settings, sink))
                sink.close()
                console.print(
                    f"postgres: loader {loads[-1]:,.0f} rows/s, raw {raws[-1]:,.0f} rows/s"
                )
            figures.append(
                summarize("postgres load rows/s", "rows/s", loads, "raw PostgreSQL COPY", raws)
            )
    for figure in figures:
        console.print(
            f"{figure.name}: {figure.value:,.0f} vs {figure.baseline_value:,.0f} "
            f"({figure.ratio:.2f}x)"
        )
    return figures


def main() -> None:
    """Command-line entry: measure and record into docs/benchmarks.json."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--targets", nargs="+", default=["duckdb", "postgres"])
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args()
    figures = run(load_settings(), args.rows, args.runs, args.targets)
    if not args.no_record:
        record(figures)


if __name__ == "__main__":
    main()
