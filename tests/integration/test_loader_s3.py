"""The S3 archive: every change once, replays rewrite the same objects, and the current
state read from the Parquet files equals the source."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from loaders.runner import Loader
from loaders.s3 import S3Sink
from loaders.s3.sink import current_state_sql, scd2_sql
from sluiceway.connect import s3_client
from sluiceway.settings import Settings
from stack.manager import Stack
from streaming.events import ColumnSchema
from tests.integration.capture_support import (
    capture_running,
    make_pipeline,
    read_topic,
    temporary_database,
    wait_caught_up,
)
from tests.integration.conftest import require
from tests.integration.test_loaders import COLUMNS, _pg_rows, _setup, _workload

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _objects(settings: Settings, root: str) -> dict[str, str]:
    client = s3_client(settings.s3)
    listed = client.list_objects_v2(Bucket=settings.s3.bucket, Prefix=f"{root}/public/")
    return {o["Key"]: o["ETag"] for o in listed.get("Contents", [])}


def _download(settings: Settings, keys: list[str], directory: Path) -> str:
    client = s3_client(settings.s3)
    for number, key in enumerate(sorted(keys)):
        client.download_file(settings.s3.bucket, key, str(directory / f"{number:04d}.parquet"))
    return str(directory / "*.parquet")


def _current(files: str) -> list[tuple[Any, ...]]:
    columns = [c.strip() for c in COLUMNS.split(",")]
    query = f"SELECT {COLUMNS} FROM ({current_state_sql(files, ['id'], columns)}) ORDER BY id"
    rows = duckdb.connect().execute(query).fetchall()
    return [(*r[:6], orjson.loads(r[6]) if r[6] is not None else None) for r in rows]


def test_archive_holds_every_change_once_and_replays_are_idempotent(
    settings: Settings, stack: Stack, unique: str, tmp_path: Path
) -> None:
    require(stack, "postgres")
    require(stack, "seaweedfs")
    with temporary_database(settings, unique) as conn:
        _setup(conn)
        pipeline = make_pipeline(unique)
        sink = S3Sink(settings.s3, unique)
        with capture_running(settings, pipeline) as capture:
            loader = Loader(settings, pipeline, sink, mode="history", batch_rows=97)
            thread = threading.Thread(target=loader.run, daemon=True)
            thread.start()
            wait_caught_up(capture, conn)  # streaming: the workload's changes are events
            _workload(conn, 800, 21)
            wait_caught_up(capture, conn)
            events = [v for _, v in read_topic(settings, f"{unique}.public.orders") if v]
            deadline = time.monotonic() + 60
            while sum(sink.stored_offsets(loader.group).values()) < len(events):
                assert time.monotonic() < deadline, "the archive did not catch up"
                time.sleep(0.2)
            loader.stop.set()
            thread.join(30)
        first = _objects(settings, unique)
        assert first and all("/history/partition=" in key for key in first)
        (tmp_path / "a").mkdir()
        files = _download(settings, list(first), tmp_path / "a")
        count, distinct = (
            duckdb.connect()
            .execute(
                f"SELECT count(*), count(DISTINCT (_sluiceway_partition, _sluiceway_offset)) "
                f"FROM read_parquet('{files}')"
            )
            .fetchone()
        )  # type: ignore[misc]
        assert count == distinct == len(events)  # every change, once
        assert _current(files) == _pg_rows(conn)
        # The SCD2 form: its current versions are the current state.
        shape = [ColumnSchema(c.strip(), "string", "text", key=c.strip() == "id")
                 for c in COLUMNS.split(",")]  # fmt: skip
        versions = (
            duckdb.connect()
            .execute(
                "SELECT count(*) FILTER (WHERE is_current), count(*) "
                f"FROM ({scd2_sql(files, shape)})"
            )
            .fetchone()
        )
        assert versions is not None and versions[0] == len(_pg_rows(conn)) < versions[1]

        # A backfill of everything again: the same objects, the same rows.
        Loader(settings, pipeline, sink, mode="history", batch_rows=250).load_window(
            0, int(time.time() * 1000) + 3_600_000
        )
        assert set(_objects(settings, unique)) == set(first)
        (tmp_path / "b").mkdir()
        again = _download(settings, list(first), tmp_path / "b")
        total = duckdb.connect().execute(f"SELECT count(*) FROM read_parquet('{again}')").fetchone()
        assert total == (len(events),)
        assert _current(again) == _pg_rows(conn)
        sink.close()


def test_archive_follows_schema_changes(
    settings: Settings, stack: Stack, unique: str, tmp_path: Path
) -> None:
    require(stack, "postgres")
    require(stack, "seaweedfs")
    with temporary_database(settings, unique) as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE items (id int PRIMARY KEY, qty int, price numeric(6, 2), note text)"
        )
        cur.execute("INSERT INTO items VALUES (1, 1, 1.50, 'a'), (2, 2, 2.50, 'b')")
        # Three partitions: the shapes land in different objects, read together by name.
        pipeline = make_pipeline(unique, topics={"partitions": 3})
        with capture_running(settings, pipeline) as capture:
            wait_caught_up(capture, conn)
            cur.execute("ALTER TABLE items ADD COLUMN color text")
            cur.execute("INSERT INTO items VALUES (3, 3, 3.50, 'c', 'red')")
            cur.execute("ALTER TABLE items ALTER COLUMN qty TYPE bigint")
            cur.execute("ALTER TABLE items ALTER COLUMN price TYPE numeric(12, 4)")
            cur.execute("INSERT INTO items VALUES (4, 1099511627776, 12345678.1234, 'd', 'blue')")
            cur.execute("ALTER TABLE items DROP COLUMN note")
            cur.execute("UPDATE items SET color = 'green' WHERE id = 1")
            wait_caught_up(capture, conn)
        sink = S3Sink(settings.s3, unique)
        # One change per batch: every shape lands in its own write to the same block object.
        Loader(settings, pipeline, sink, mode="history", batch_rows=1).load_window(
            0, int(time.time() * 1000) + 3_600_000
        )
        sink.close()
        files = _download(settings, list(_objects(settings, unique)), tmp_path)
        columns = ["id", "qty", "price", "note", "color"]
        query = f"SELECT * FROM ({current_state_sql(files, ['id'], columns)}) ORDER BY id"
        rows = [r[:5] for r in duckdb.connect().execute(query).fetchall()]
        assert rows == [
            (1, 1, Decimal("1.5000"), None, "green"),  # after the drop: note is NULL
            (2, 2, Decimal("2.5000"), "b", None),
            (3, 3, Decimal("3.5000"), "c", "red"),
            (4, 1099511627776, Decimal("12345678.1234"), "d", "blue"),
        ]
