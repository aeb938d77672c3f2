"""PostgreSQL -> capture -> Kafka -> loader -> DuckDB or PostgreSQL: target equals source."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from loaders.base import Sink
from loaders.bigquery import BigQuerySink
from loaders.duckdb import DuckDBSink
from loaders.postgres import PostgresSink
from loaders.runner import Loader
from loaders.snowflake import SnowflakeSink
from sluiceway.connect import postgres_connection
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

pytestmark = [pytest.mark.integration, pytest.mark.slow]

COLUMNS = "id, customer, total, placed, tags, body, payload"


def _setup(conn: Any) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE orders (id int PRIMARY KEY, customer text, total numeric(14, 4), "
            "placed timestamptz, tags text[], body text, payload jsonb)"
        )
        cur.execute("ALTER TABLE orders ALTER COLUMN body SET STORAGE EXTERNAL")
        cur.execute(
            "INSERT INTO orders SELECT g, 'c' || g, g * 1.0001, "
            "'1969-12-31 23:59:59.999999+00'::timestamptz + g * interval '1 microsecond', "
            "ARRAY['a', NULL], repeat(md5(g::text), 300), '{\"n\": 1.10}' "
            "FROM generate_series(1, 500) g"
        )


def _workload(conn: Any, transactions: int, seed: int) -> None:
    rng = random.Random(seed)
    with conn.cursor() as cur:
        for _ in range(transactions):
            key = rng.randint(1, 800)
            action = rng.random()
            if action < 0.35:
                cur.execute(
                    "INSERT INTO orders VALUES (%s, %s, %s, now(), %s, %s, %s) "
                    "ON CONFLICT (id) DO UPDATE SET total = EXCLUDED.total",
                    (key, "new", "99999999.9999", ["x", "y z"], "short body", '{"k": [1, 2]}'),
                )
            elif action < 0.75:  # leaves the TOASTed body unchanged
                cur.execute("UPDATE orders SET total = total + 0.0001 WHERE id = %s", (key,))
            elif action < 0.85:
                cur.execute("UPDATE orders SET customer = NULL, tags = '{}' WHERE id = %s", (key,))
            else:
                cur.execute("DELETE FROM orders WHERE id = %s", (key,))


def _high_watermarks(settings: Settings, prefix: str) -> dict[tuple[str, int], int]:
    consumer = Consumer({**settings.kafka.client_config(), "group.id": "watermarks"})
    try:
        topic = f"{prefix}.public.orders"
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {
            (topic, p): consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
    finally:
        consumer.close()


def _pg_rows(conn: Any) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(f"SELECT {COLUMNS} FROM orders ORDER BY id")
        return [(*r[:6], r[6]) for r in cur.fetchall()]


def _query(sink: Sink, query: str) -> list[tuple[Any, ...]]:
    if isinstance(sink, DuckDBSink):
        return [tuple(r) for r in sink.conn.execute(query).fetchall()]
    if isinstance(sink, BigQuerySink):
        return [tuple(r.values()) for r in sink.client.query(query).result()]
    if isinstance(sink, SnowflakeSink):
        return [tuple(r) for r in sink.conn.cursor().execute(query).fetchall()]
    assert isinstance(sink, PostgresSink)
    with sink.conn.cursor() as cur:
        cur.execute(query)
        rows = [tuple(r) for r in cur.fetchall()]
    sink.conn.commit()
    return rows


def _table(sink: Sink, schema: str, table: str) -> str:
    if isinstance(sink, BigQuerySink):
        return f"`{sink.dataset}.{table}`"
    if isinstance(sink, SnowflakeSink):
        return f'"{table}"'
    return f'"{schema}".{table}'


def _target_rows(sink: Sink, schema: str) -> list[tuple[Any, ...]]:
    rows = _query(sink, f"SELECT {COLUMNS} FROM {_table(sink, schema, 'orders')} ORDER BY id")
    # JSON and arrays come back as text from some targets (Snowflake VARIANT, DuckDB JSON).
    return [
        (*r[:4], orjson.loads(r[4]) if isinstance(r[4], str) else r[4], r[5],
         orjson.loads(r[6]) if isinstance(r[6], str) else r[6])
        for r in rows
    ]  # fmt: skip


@contextmanager
def _sink(kind: str, settings: Settings, name: str, path: Path) -> Iterator[Sink]:
    if kind == "duckdb":
        duck = DuckDBSink(path, name)
        try:
            yield duck
        finally:
            duck.close()
        return
    if kind == "snowflake":
        sf = SnowflakeSink(settings.snowflake, name)
        try:
            yield sf
        finally:
            sf.close()
        return
    if kind == "bigquery":
        bq = BigQuerySink(settings.bigquery, name)
        try:
            yield bq
        finally:
            bq.client.delete_dataset(bq.dataset, delete_contents=True, not_found_ok=True)
        return
    with temporary_database(settings, f"{name}_target"):
        pg = PostgresSink(settings.postgres, f"{name}_target", name)
        try:
            yield pg
        finally:
            pg.close()


def _wait_loaded(
    loader: Loader, settings: Settings, prefix: str, errors: list[BaseException]
) -> None:
    deadline = time.monotonic() + 60
    while True:
        if errors:
            raise AssertionError(f"the loader failed: {errors[0]!r}") from errors[0]
        high = _high_watermarks(settings, prefix)
        stored = loader.stats.offsets
        if all(stored.get(tp, 0) >= end for tp, end in high.items()):
            return
        assert time.monotonic() < deadline, f"loader lag did not reach zero: {stored} < {high}"
        time.sleep(0.2)


@pytest.mark.parametrize("kind", ["duckdb", "postgres", "bigquery", "snowflake"])
def test_continuous_load_equals_source(
    settings: Settings, stack: Stack, unique: str, tmp_path: Path, kind: str
) -> None:
    require(stack, "postgres")
    with (
        temporary_database(settings, unique) as conn,
        _sink(kind, settings, unique, tmp_path / "w.duckdb") as sink,
    ):
        _setup(conn)
        pipeline = make_pipeline(unique)
        loader = Loader(settings, pipeline, sink, mode="both", batch_rows=500, batch_seconds=0.2)
        writer_conn = postgres_connection(settings.postgres, database=unique)
        writer_conn.autocommit = True
        with capture_running(settings, pipeline) as capture:
            wait_caught_up(capture, conn)
            errors: list[BaseException] = []

            def run() -> None:
                try:
                    loader.run()
                except BaseException as exc:  # noqa: BLE001 - surfaced by _wait_loaded
                    errors.append(exc)

            thread = threading.Thread(target=run, daemon=True)
            thread.start()
            _workload(writer_conn, 1500, 4)
            wait_caught_up(capture, conn)
            # Lag returns to zero: the target stored every offset Kafka holds.
            _wait_loaded(loader, settings, unique, errors)
            loader.stop.set()
            thread.join(30)
        writer_conn.close()
        assert _target_rows(sink, unique) == _pg_rows(conn)
        events = [v for _, v in read_topic(settings, f"{unique}.public.orders") if v]
        history = _query(sink, f"SELECT count(*) FROM {_table(sink, unique, 'orders__history')}")
        assert history == [(len(events),)]  # every change, once


@pytest.mark.parametrize("kind", ["duckdb", "postgres", "bigquery", "snowflake"])
def test_bounded_window_twice_changes_nothing(
    settings: Settings, stack: Stack, unique: str, tmp_path: Path, kind: str
) -> None:
    require(stack, "postgres")
    with (
        temporary_database(settings, unique) as conn,
        _sink(kind, settings, unique, tmp_path / "w.duckdb") as sink,
    ):
        _setup(conn)
        pipeline = make_pipeline(unique)
        with capture_running(settings, pipeline) as capture:
            _workload(conn, 600, 8)
            wait_caught_up(capture, conn)
        loader = Loader(settings, pipeline, sink, mode="both", batch_rows=300)
        window = (0, int(time.time() * 1000) + 3_600_000)
        first_rows = loader.load_window(*window)
        first = _target_rows(sink, unique)
        count = f"SELECT count(*) FROM {_table(sink, unique, 'orders__history')}"
        history = _query(sink, count)
        assert loader.load_window(*window) == first_rows
        assert _target_rows(sink, unique) == first == _pg_rows(conn)
        assert _query(sink, count) == history
