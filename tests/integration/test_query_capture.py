"""Query-based capture against real PostgreSQL, MariaDB and SQLite, and what it misses next to
log-based capture on the same workload (the README shows the same comparison)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from sluiceway.connect import mariadb_connection
from sluiceway.pipeline import Pipeline
from sluiceway.settings import Settings
from streaming.sources.query.capture import QueryCapture
from tests.integration.capture_support import (
    capture_running,
    make_pipeline,
    read_topic,
    rebuild_state,
    temporary_database,
    wait_caught_up,
)
from tests.integration.conftest import require

pytestmark = pytest.mark.timeout(300)


def query_pipeline(name: str, url: str, tables: list[dict[str, Any]], **source: Any) -> Pipeline:
    return Pipeline(
        name=name,
        source={
            "kind": "query",
            "url": url,
            "tables": tables,
            "poll_seconds": 0.2,
            "delay_seconds": 1.0,
            **source,
        },
        topics={"prefix": name, "partitions": 1},
    )


def wait_polled(capture: QueryCapture, polls: int = 2, timeout: float = 30.0) -> None:
    """Wait for ``polls`` more complete polls (each one acknowledged by Kafka)."""
    target = capture.polls + polls
    deadline = time.monotonic() + timeout
    while capture.polls < target:
        assert capture.error is None, capture.error
        assert time.monotonic() < deadline, "query capture did not poll"
        time.sleep(0.05)


def wait_for(condition: Callable[[], bool], capture: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert capture.error is None, capture.error
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.2)


def events(settings: Settings, topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(v) for _k, v in read_topic(settings, topic) if v]


@pytest.fixture
def pg(settings: Settings, stack: Any, unique: str) -> Iterator[Any]:
    require(stack, "postgres")
    require(stack, "kafka")
    with temporary_database(settings, unique) as conn:
        yield conn


def test_side_by_side_query_capture_misses_deletes_and_intermediate_updates(
    settings: Settings, pg: Any, unique: str
) -> None:
    with pg.cursor() as cur:
        cur.execute(
            "CREATE TABLE orders (id serial PRIMARY KEY, status text, amount numeric(10,2), "
            "updated_at timestamp NOT NULL DEFAULT (clock_timestamp() AT TIME ZONE 'UTC'))"
        )
        cur.execute(
            "INSERT INTO orders (status, amount) "
            "SELECT 'new', g * 1.25 FROM generate_series(1, 50) g"
        )
    log_based = make_pipeline(unique, ["public.orders"])
    polled = query_pipeline(
        f"{unique}_q",
        "postgres",
        [{"table": "public.orders", "mode": "timestamp+incrementing",
          "timestamp_column": "updated_at", "incrementing_column": "id"}],
        database=unique,
    )  # fmt: skip
    touch = "updated_at = clock_timestamp() AT TIME ZONE 'UTC'"
    with capture_running(settings, log_based) as log_capture:
        with capture_running(settings, polled) as query_capture:
            wait_polled(query_capture)
            time.sleep(1.2)  # past the safety delay: the 50 rows are read
            wait_polled(query_capture)
            with pg.cursor() as cur:
                # Two updates of one row in quick succession: one poll sees only the second.
                cur.execute(f"UPDATE orders SET status = 'paid', {touch} WHERE id = 1")
                cur.execute(f"UPDATE orders SET status = 'shipped', {touch} WHERE id = 1")
                cur.execute("DELETE FROM orders WHERE id BETWEEN 2 AND 5")
                cur.execute("INSERT INTO orders (status, amount) VALUES ('new', 99.99)")
            time.sleep(1.2)
            wait_polled(query_capture)
        wait_caught_up(log_capture, pg)
    with pg.cursor() as cur:
        cur.execute("SELECT id, status, amount::text FROM orders ORDER BY id")
        source = {f'{{"id":{i}}}': (s, a) for i, s, a in cur.fetchall()}

    def current(topic: str) -> dict[str, tuple[str, str]]:
        state = rebuild_state(read_topic(settings, topic))
        return {k: (v["status"], v["amount"]) for k, v in state.items()}

    log_events = events(settings, f"{unique}.public.orders")
    query_events = events(settings, f"{unique}_q.public.orders")
    # Log-based: every change, deletes included; the topic rebuilds the table exactly.
    assert [e["op"] for e in log_events].count("d") == 4
    assert [e["after"]["status"] for e in log_events if e["op"] == "u"] == ["paid", "shipped"]
    assert current(f"{unique}.public.orders") == source
    # Query-based: no deletes, and the intermediate 'paid' state was never seen.
    assert "d" not in [e["op"] for e in query_events]
    row_1 = [e["after"]["status"] for e in query_events if e["after"]["id"] == 1]
    assert row_1 == ["new", "shipped"]
    polled_state = current(f"{unique}_q.public.orders")
    assert set(polled_state) - set(source) == {f'{{"id":{i}}}' for i in range(2, 6)}
    assert {k: v for k, v in polled_state.items() if k in source} == source
    assert len(query_events) == 52  # 50 rows, the final update of row 1, the new row


def test_sqlite_all_three_modes_and_restart_resumes_without_resending(
    settings: Settings, stack: Any, unique: str, tmp_path: Path
) -> None:
    require(stack, "kafka")
    path = tmp_path / "shop.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    metadata = sa.MetaData()
    tables = {
        name: sa.Table(
            name,
            metadata,
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("name", sa.String(40)),
            sa.Column("price", sa.Numeric(10, 2)),
            sa.Column("updated_at", sa.DateTime, nullable=False),
        )
        for name in ("inc", "ts", "both")
    }
    metadata.create_all(engine)
    old = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=5)

    def write(rows: list[dict[str, Any]], update: dict[str, Any] | None = None) -> None:
        with engine.begin() as conn:
            for table in tables.values():
                if rows:
                    conn.execute(table.insert(), rows)
                if update is not None:
                    conn.execute(table.update().where(table.c.id == update["id"]).values(update))

    write([{"id": i, "name": f"n{i}", "price": i * 1.5, "updated_at": old} for i in range(1, 21)])
    spec = [
        {"table": "main.inc", "mode": "incrementing", "incrementing_column": "id"},
        {"table": "main.ts", "mode": "timestamp", "timestamp_column": "updated_at"},
        {"table": "main.both", "mode": "timestamp+incrementing", "timestamp_column": "updated_at",
         "incrementing_column": "id"},
    ]  # fmt: skip
    pipeline = query_pipeline(unique, f"sqlite:///{path}", spec, batch_rows=7)
    with capture_running(settings, pipeline) as capture:
        wait_polled(capture, 4)  # batches of 7: three polls read the 20 rows
    write(
        [{"id": 21, "name": "n21", "price": 99, "updated_at": old + timedelta(minutes=1)}],
        {"id": 3, "name": "renamed", "updated_at": old + timedelta(minutes=2)},
    )
    with capture_running(settings, pipeline) as capture:  # a restart: positions were saved
        wait_polled(capture, 2)
    for name in ("inc", "ts", "both"):
        topic = f"{unique}.main.{name}"
        got = events(settings, topic)
        with engine.connect() as conn:
            rows = conn.execute(sa.select(tables[name]).order_by("id")).mappings().all()
        state = rebuild_state(read_topic(settings, topic))
        if name == "inc":  # inserts only: the rename of row 3 is invisible to this mode
            assert len(got) == 21 and state['{"id":3}']["name"] == "n3"
        else:
            assert len(got) == 22  # 20 + the new row + the update, nothing resent on restart
            expected = {f'{{"id":{r["id"]}}}': (r["name"], format(r["price"], "f")) for r in rows}
            assert {k: (v["name"], v["price"]) for k, v in state.items()} == expected


def test_mariadb_by_timestamp_and_incrementing(settings: Settings, stack: Any, unique: str) -> None:
    require(stack, "mariadb")
    require(stack, "kafka")
    conn = mariadb_connection(settings.mariadb, autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{unique}`")
        cur.execute(
            f"CREATE TABLE `{unique}`.items (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(40), "
            "modified DATETIME(6) NOT NULL DEFAULT UTC_TIMESTAMP(6))"
        )
        cur.execute(f"INSERT INTO `{unique}`.items (name) VALUES ('a 😀'), ('b'), ('c')")
    pipeline = query_pipeline(
        unique,
        "mariadb",
        [{"table": f"{unique}.items", "mode": "timestamp+incrementing",
          "timestamp_column": "modified", "incrementing_column": "id"}],
        database=unique,
        delay_seconds=0.5,
    )  # fmt: skip
    try:
        topic = f"{unique}.{unique}.items"
        with capture_running(settings, pipeline) as capture:
            wait_for(lambda: len(events(settings, topic)) >= 3, capture)
            with conn.cursor() as cur:
                cur.execute(
                    f"UPDATE `{unique}`.items SET name = 'B', modified = UTC_TIMESTAMP(6) "
                    "WHERE id = 2"
                )
            wait_for(lambda: len(events(settings, topic)) >= 4, capture)
            wait_polled(capture)
        assert len(events(settings, topic)) == 4
        state = rebuild_state(read_topic(settings, f"{unique}.{unique}.items"))
        assert {k: v["name"] for k, v in state.items()} == {
            '{"id":1}': "a 😀",
            '{"id":2}': "B",
            '{"id":3}': "c",
        }
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE `{unique}`")
        conn.close()
        QueryCapture.path(settings.state_dir, unique).unlink(missing_ok=True)
