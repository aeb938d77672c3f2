"""Benchmark: loading change events into current-state tables next to a raw bulk load.

1,000,000 insert events (the envelope capture writes) are produced once to a 3-partition
topic. Each run then loads them with the loader (``load_window``, current-state mode: staging,
position guard, delete guards, offsets; history mode for S3, the archive) into a fresh table,
and bulk-loads the same rows raw: DuckDB from an Arrow table, PostgreSQL with COPY, S3 one
Parquet PUT, BigQuery a Parquet load job, Snowflake PUT and COPY INTO of Parquet. Rates are
rows per second of wall time, reading from Kafka included for the loader (the raw loads start
from rows in memory).

BigQuery and Snowflake run here as local emulators (local-bigquery, fakesnow): their rates are
the emulators' MERGE and load speed, not the services', and a 1M-row window of them took over
three minutes of the suite's time for three runs at ~20k rows/s. They load a 200,000-event
window of their own topic (``--emulated-rows``; the figures name the size). The loader's rate
is ~15% lower there than on 1M events (two batches leave less to overlap), the raw loads' about
half (a job's fixed cost is spread over fewer rows): docs/benchmarks-notes.md.

    python -m bench.load [--rows 1000000] [--runs 3] [--targets duckdb postgres s3 ...]
                         [--emulated-rows 200000]
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
import pyarrow.parquet as pq
from confluent_kafka import Producer
from rich.console import Console

from bench.process import TopicCounter
from bench.record import Figure, command, summarize
from loaders.base import Mode, Sink
from loaders.bigquery import BigQuerySink
from loaders.duckdb import DuckDBSink
from loaders.postgres import PostgresSink
from loaders.runner import Loader
from loaders.s3 import S3Sink
from loaders.snowflake import SnowflakeSink
from sluiceway.connect import (
    bigquery_client,
    kafka_admin,
    postgres_connection,
    s3_client,
    snowflake_connection,
)
from sluiceway.pipeline import Pipeline, PostgresSource, TopicSettings
from sluiceway.settings import Settings
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


def _holds(settings: Settings, topic: str, rows: int, prefix: str = PREFIX) -> bool:
    """Whether ``topic`` holds exactly the ``rows`` events `_produce` writes (by its high
    watermarks: the suite's topics are fresh), with its schema topic beside it."""
    counter = TopicCounter(settings)
    try:
        return counter.records(topic) == rows and counter.records(f"{prefix}.schemas") > 0
    finally:
        counter.close()


def _produce(settings: Settings, rows: int, reuse: bool = False, prefix: str = PREFIX) -> bool:
    """Write ``rows`` insert events to the benchmark topic (of the pipeline named ``prefix``);
    whether it did. With ``reuse``, a topic that already holds exactly them (an earlier
    benchmark of the suite wrote it: the events are the same for the same count) is kept."""
    topic = f"{prefix}.public.items"
    if reuse and _holds(settings, topic, rows, prefix):
        return False
    admin = kafka_admin(settings.kafka)
    existing = admin.list_topics(timeout=10).topics
    if topic in existing:
        admin.delete_topics([topic, f"{prefix}.schemas"])[topic].result(30)
        time.sleep(2)
    ensure_topics(admin, [topic], TopicSettings(partitions=3))
    ensure_topics(
        admin, [f"{prefix}.schemas"], TopicSettings(cleanup_policy="compact"), partitions=1
    )
    producer = Producer(
        {**settings.kafka.client_config(), "linger.ms": 50, "compression.type": "lz4"}
    )
    producer.produce(
        f"{prefix}.schemas", orjson.dumps(SCHEMA.to_json()), orjson.dumps({"id": SCHEMA.id})
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
    return True


def _pipeline(prefix: str = PREFIX) -> Pipeline:
    return Pipeline(name=prefix, source=PostgresSource(), topics=TopicSettings(partitions=3))


def _load(settings: Settings, sink: Sink, mode: Mode, prefix: str = PREFIX) -> float:
    loader = Loader(settings, _pipeline(prefix), sink, mode=mode, batch_rows=100_000)
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


def _s3_raw(settings: Settings, arrow: pa.Table, rows: int) -> float:
    client = s3_client(settings.s3)
    start = time.perf_counter()
    buffer = io.BytesIO()
    pq.write_table(arrow, buffer)
    client.put_object(Bucket=settings.s3.bucket, Key=f"{PREFIX}-raw/items.parquet",
                      Body=buffer.getvalue())  # fmt: skip
    return rows / (time.perf_counter() - start)


def _bigquery_raw(settings: Settings, arrow: pa.Table, rows: int) -> float:
    from google.cloud import bigquery

    client = bigquery_client(settings.bigquery)
    dataset = f"{settings.bigquery.project}.{PREFIX}_raw"
    client.create_dataset(dataset, exists_ok=True)
    buffer = io.BytesIO()
    pq.write_table(arrow, buffer)
    buffer.seek(0)
    config = bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.PARQUET,
        write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
    )
    start = time.perf_counter()
    client.load_table_from_file(buffer, f"{dataset}.items", job_config=config).result(timeout=600)
    elapsed = time.perf_counter() - start
    client.close()  # type: ignore[no-untyped-call]
    return rows / elapsed


def _snowflake_raw(settings: Settings, arrow: pa.Table, directory: Path, rows: int) -> float:
    conn = snowflake_connection(settings.snowflake)
    cur = conn.cursor()
    database = settings.snowflake.database
    cur.execute(f"CREATE DATABASE IF NOT EXISTS {database}")
    cur.execute(f"CREATE SCHEMA IF NOT EXISTS {database}.{PREFIX}_raw")
    cur.execute(f"USE SCHEMA {database}.{PREFIX}_raw")
    cur.execute(
        "CREATE OR REPLACE TABLE items (id NUMBER(19,0), name VARCHAR, amount NUMBER(12,2), "
        "created TIMESTAMP_TZ, flag BOOLEAN)"
    )
    path = directory / "items.parquet"
    start = time.perf_counter()
    pq.write_table(arrow, path)
    cur.execute(f"PUT file://{path} @%items")
    cur.execute(
        "COPY INTO items FROM @%items FILE_FORMAT = (TYPE = PARQUET) "
        "MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE"
    )
    elapsed = time.perf_counter() - start
    conn.close()
    return rows / elapsed


# Warehouses that run here as local emulators: their figures measure the emulators, not the
# services, so a smaller window (``--emulated-rows``) is enough to show them.
EMULATED = ("bigquery", "snowflake")
_BASELINES = {
    "duckdb": "raw DuckDB insert from Arrow",
    "postgres": "raw PostgreSQL COPY",
    "s3": "raw Parquet write and PUT to S3",
    "bigquery": "raw BigQuery Parquet load job",
    "snowflake": "raw Snowflake PUT and COPY INTO of Parquet",
}


def _arrow(typed: dict[str, list[Any]]) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(typed["id"], pa.int64()),
            "name": pa.array(typed["name"], pa.string()),
            "amount": pa.array(typed["amount"], pa.decimal128(12, 2)),
            "created": pa.array(typed["created"], pa.timestamp("us", tz="UTC")),
            "flag": pa.array(typed["flag"], pa.bool_()),
        }
    )


def _figure_name(target: str, rows: int, full: int) -> str:
    if rows == full:
        return f"{target} load rows/s"
    return f"{target} load rows/s ({rows:,} events, emulator)"


def run(
    settings: Settings, rows: int, runs: int, targets: list[str], emulated_rows: int
) -> list[Figure]:
    """Measure, print and return the figures."""
    sizes = {t: min(rows, emulated_rows) if t in EMULATED else rows for t in targets}
    for size in sorted(set(sizes.values()), reverse=True):
        console.print(f"producing {size:,} change events")
        _produce(settings, size, prefix=_prefix(size, rows))
    typed = _typed(max(sizes.values()))
    arrow = _arrow(typed)
    copy_text = "".join(
        f"{i}\titem-{i}\t{a}\t{c.isoformat()}\t{'t' if f else 'f'}\n"
        for i, a, c, f in zip(
            typed["id"], typed["amount"], typed["created"], typed["flag"], strict=True
        )
    )
    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for target in targets:
            size = sizes[target]
            prefix = _prefix(size, rows)
            rows_arrow = arrow.slice(0, size)
            loads, raws = [], []
            for number in range(runs):
                name = f"{prefix}{number}_{int(time.time())}"
                mode: Mode = "current"
                if target == "duckdb":
                    raws.append(_duckdb_raw(rows_arrow, directory, size))
                    sink: Sink = DuckDBSink(directory / f"{name}.duckdb", prefix)
                elif target == "postgres":
                    _postgres_database(settings)
                    raws.append(_postgres_raw(settings, copy_text, size))
                    sink = PostgresSink(settings.postgres, "bench_load", prefix)
                elif target == "s3":
                    raws.append(_s3_raw(settings, rows_arrow, size))
                    sink = S3Sink(settings.s3, name)
                    mode = "history"  # the archive: every change, as Parquet
                elif target == "bigquery":
                    raws.append(_bigquery_raw(settings, rows_arrow, size))
                    sink = BigQuerySink(settings.bigquery, name)
                else:
                    raws.append(_snowflake_raw(settings, rows_arrow, directory, size))
                    sink = SnowflakeSink(settings.snowflake, name)
                loads.append(_load(settings, sink, mode, prefix))
                sink.close()
                console.print(
                    f"{target}: loader {loads[-1]:,.0f} rows/s, raw {raws[-1]:,.0f} rows/s "
                    f"({size:,} events)"
                )
            figures.append(
                summarize(
                    _figure_name(target, size, rows), "rows/s", loads, _BASELINES[target], raws
                )
            )
    for figure in figures:
        console.print(
            f"{figure.name}: {figure.value:,.0f} vs {figure.baseline_value:,.0f} "
            f"({figure.ratio:.2f}x)"
        )
    return figures


def _prefix(size: int, rows: int) -> str:
    """The pipeline (and topic prefix) of a window of ``size`` events: the full-size topic is
    the one `bench.replay` reuses; a smaller one has its own."""
    return PREFIX if size == rows else f"{PREFIX}{size}"


def main() -> None:
    """Command-line entry: measure and record into docs/benchmarks.json."""

    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--targets", nargs="+", default=list(_BASELINES), choices=_BASELINES)
        parser.add_argument(
            "--emulated-rows",
            type=int,
            default=200_000,
            help="events loaded into the emulated warehouses (BigQuery, Snowflake)",
        )

    command(__doc__, run, "rows", 1_000_000, options)


if __name__ == "__main__":
    main()
