"""Schema changes while streaming, and names that need quoting, reconcile exactly."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from sluiceway.settings import Settings
from stack.manager import Stack
from tests.integration.capture_support import (
    capture_running,
    make_pipeline,
    read_topic,
    rebuild_state,
    temporary_database,
    wait_caught_up,
)
from tests.integration.conftest import require

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _rows(conn: Any, query: str, key: str) -> dict[str, dict[str, Any]]:
    with conn.cursor() as cur:
        cur.execute(query)
        names = [d.name for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    return {orjson.dumps({key: r[key]}).decode(): r for r in rows}


def _events(settings: Settings, topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(v) for _, v in read_topic(settings, topic) if v]


def test_schema_changes_mid_stream(settings: Settings, stack: Stack, unique: str) -> None:
    require(stack, "postgres")
    with temporary_database(settings, unique) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE items (id int PRIMARY KEY, name text, qty int, note text)")
        cur.execute("INSERT INTO items SELECT g, 'i' || g, g, 'n' FROM generate_series(1, 50) g")
        with capture_running(settings, make_pipeline(unique)) as capture:
            wait_caught_up(capture, conn)
            cur.execute("ALTER TABLE items ADD COLUMN color text DEFAULT 'red'")
            cur.execute("INSERT INTO items VALUES (101, 'added', 1, 'n', 'blue')")
            cur.execute("ALTER TABLE items RENAME COLUMN name TO title")
            cur.execute("UPDATE items SET title = 'renamed' WHERE id = 2")
            cur.execute("ALTER TABLE items ALTER COLUMN qty TYPE bigint")
            cur.execute("INSERT INTO items VALUES (102, 'wide', 1099511627776, 'n', 'green')")
            cur.execute("ALTER TABLE items DROP COLUMN note")
            cur.execute("INSERT INTO items VALUES (103, 'dropped', 3, 'black')")
            cur.execute("DELETE FROM items WHERE id = 3")
            cur.execute("CREATE TABLE fresh (id int PRIMARY KEY, v text)")
            cur.execute("INSERT INTO fresh SELECT g, 'v' || g FROM generate_series(1, 20) g")
            cur.execute("UPDATE items SET qty = qty + 1")  # every key's last event: final shape
            wait_caught_up(capture, conn)
        events = _events(settings, f"{unique}.public.items")
        by_id = {e["after"]["id"]: e["after"] for e in events if e["op"] == "c"}
        assert by_id[101] == {"id": 101, "name": "added", "qty": 1, "note": "n", "color": "blue"}
        assert by_id[102] == {
            "id": 102, "title": "wide", "qty": 1099511627776, "note": "n", "color": "green"
        }  # fmt: skip
        assert by_id[103] == {"id": 103, "title": "dropped", "qty": 3, "color": "black"}
        renamed = next(e for e in events if e["op"] == "u" and e["after"]["id"] == 2)
        assert renamed["after"]["title"] == "renamed" and "name" not in renamed["after"]
        items = rebuild_state(read_topic(settings, f"{unique}.public.items"))
        assert items == _rows(conn, "SELECT * FROM items", "id")
        fresh = rebuild_state(read_topic(settings, f"{unique}.public.fresh"))
        assert fresh == _rows(conn, "SELECT * FROM fresh", "id")


def test_names_that_need_quoting(settings: Settings, stack: Stack, unique: str) -> None:
    require(stack, "postgres")
    with temporary_database(settings, unique) as conn, conn.cursor() as cur:
        cur.execute('CREATE SCHEMA "My Schema"')
        cur.execute(
            'CREATE TABLE "My Schema"."Mixed ""Case"" Table" ("ID" int PRIMARY KEY, '
            '"Order" text, "select" int, "with space" text, "CamelCase" boolean)'
        )
        cur.execute(
            """INSERT INTO "My Schema"."Mixed ""Case"" Table" SELECT g, 'o' || g, g, 's p', true
            FROM generate_series(1, 30) g"""
        )
        pipeline = make_pipeline(unique, include=["My Schema.*"])
        with capture_running(settings, pipeline) as capture:
            wait_caught_up(capture, conn)
            cur.execute(
                """UPDATE "My Schema"."Mixed ""Case"" Table" SET "select" = -1, "Order" = NULL
                WHERE "ID" <= 10"""
            )
            cur.execute('DELETE FROM "My Schema"."Mixed ""Case"" Table" WHERE "ID" > 25')
            wait_caught_up(capture, conn)
        topic = f"{unique}.My_Schema.Mixed__Case__Table"
        state = rebuild_state(read_topic(settings, topic))
        assert state == _rows(conn, 'SELECT * FROM "My Schema"."Mixed ""Case"" Table"', "ID")
        assert len(state) == 25
