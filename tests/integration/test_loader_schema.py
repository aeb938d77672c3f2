"""Schema evolution in the targets: new columns appear, types widen, dropped columns stay;
an incompatible change stops the load with a message that says what to do."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

from loaders.runner import Loader
from sluiceway.errors import SinkFatal
from sluiceway.settings import Settings
from stack.manager import Stack
from tests.integration.capture_support import (
    capture_running,
    make_pipeline,
    temporary_database,
    wait_caught_up,
)
from tests.integration.conftest import require
from tests.integration.test_loaders import _query, _sink, _table

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.parametrize("kind", ["duckdb", "postgres", "bigquery", "snowflake"])
def test_columns_added_widened_and_dropped(
    settings: Settings, stack: Stack, unique: str, tmp_path: Path, kind: str
) -> None:
    require(stack, "postgres")
    with (
        temporary_database(settings, unique) as conn,
        _sink(kind, settings, unique, tmp_path / "w.duckdb") as sink,
        conn.cursor() as cur,
    ):
        cur.execute(
            "CREATE TABLE items (id int PRIMARY KEY, qty int, price numeric(6, 2), note text)"
        )
        cur.execute("INSERT INTO items VALUES (1, 1, 1.50, 'a'), (2, 2, 2.50, 'b')")
        pipeline = make_pipeline(unique)
        with capture_running(settings, pipeline) as capture:
            wait_caught_up(capture, conn)
            cur.execute("ALTER TABLE items ADD COLUMN color text")
            cur.execute("INSERT INTO items VALUES (3, 3, 3.50, 'c', 'red')")
            cur.execute("ALTER TABLE items ALTER COLUMN qty TYPE bigint")
            # Snowflake widens a NUMBER's precision only, never its scale in place.
            wider = "numeric(12, 2)" if kind == "snowflake" else "numeric(12, 4)"
            cur.execute(f"ALTER TABLE items ALTER COLUMN price TYPE {wider}")
            cur.execute("INSERT INTO items VALUES (4, 1099511627776, 12345678.12, 'd', 'blue')")
            cur.execute("ALTER TABLE items DROP COLUMN note")
            cur.execute("INSERT INTO items VALUES (5, 5, 5.5, 'green')")
            wait_caught_up(capture, conn)
        loader = Loader(settings, pipeline, sink, mode="current", batch_rows=2)
        loader.load_window(0, int(time.time() * 1000) + 3_600_000)
        rows = _query(
            sink,
            f"SELECT id, qty, price, note, color FROM {_table(sink, unique, 'items')} ORDER BY id",
        )
        assert rows == [
            (1, 1, Decimal("1.50"), "a", None),
            (2, 2, Decimal("2.50"), "b", None),
            (3, 3, Decimal("3.50"), "c", "red"),
            (4, 1099511627776, Decimal("12345678.12"), "d", "blue"),
            (5, 5, Decimal("5.5"), None, "green"),  # the dropped column stays, null
        ]


@pytest.mark.parametrize("kind", ["duckdb", "postgres", "bigquery", "snowflake"])
def test_incompatible_change_stops_with_a_clear_message(
    settings: Settings, stack: Stack, unique: str, tmp_path: Path, kind: str
) -> None:
    require(stack, "postgres")
    with (
        temporary_database(settings, unique) as conn,
        _sink(kind, settings, unique, tmp_path / "w.duckdb") as sink,
        conn.cursor() as cur,
    ):
        cur.execute("CREATE TABLE codes (id int PRIMARY KEY, code text)")
        cur.execute("INSERT INTO codes VALUES (1, '10')")
        # One partition: across partitions shapes arrive in any order, and a target column
        # simply converges to the wider type of the two (text), which is no error.
        pipeline = make_pipeline(unique, topics={"partitions": 1})
        with capture_running(settings, pipeline) as capture:
            wait_caught_up(capture, conn)
            cur.execute("ALTER TABLE codes ALTER COLUMN code TYPE integer USING code::integer")
            cur.execute("INSERT INTO codes VALUES (2, 20)")
            wait_caught_up(capture, conn)
        loader = Loader(settings, pipeline, sink, mode="current", batch_rows=1)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                loader.run()
            except BaseException as exc:  # noqa: BLE001 - asserted below
                errors.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(60)
        assert not thread.is_alive(), "the loader must stop, not hang"
        assert len(errors) == 1 and isinstance(errors[0], SinkFatal)
        message = str(errors[0])
        assert "codes" in message and "code" in message and "changed its type" in message
        assert "migrate the column by hand" in message
        # Nothing of the refused batch landed; the row before the change did.
        assert _query(sink, f"SELECT id, code FROM {_table(sink, unique, 'codes')}") == [(1, "10")]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("duckdb", ["0044-03-15 (BC)", "0001-01-01 (BC)", "1969-07-20", "infinity", None]),
        ("postgres", ["0044-03-15 BC", "0001-01-01 BC", "1969-07-20", "infinity", None]),
    ],
)
def test_edge_dates_load_exactly(
    settings: Settings, stack: Stack, unique: str, tmp_path: Path, kind: str, expected: list[str]
) -> None:
    require(stack, "postgres")
    with (
        temporary_database(settings, unique) as conn,
        _sink(kind, settings, unique, tmp_path / "w.duckdb") as sink,
        conn.cursor() as cur,
    ):
        cur.execute("CREATE TABLE days (id int PRIMARY KEY, d date)")
        cur.execute(
            "INSERT INTO days VALUES (1, '0044-03-15 BC'), (2, '0001-01-01 BC'), "
            "(3, '1969-07-20'), (4, 'infinity'), (5, NULL)"
        )
        pipeline = make_pipeline(unique)
        with capture_running(settings, pipeline) as capture:
            wait_caught_up(capture, conn)
        Loader(settings, pipeline, sink, mode="current").load_window(
            0, int(time.time() * 1000) + 3_600_000
        )
        cast = "CAST(d AS VARCHAR)" if kind == "duckdb" else "d::text"
        rows = _query(sink, f'SELECT {cast} FROM "{unique}".days ORDER BY id')
        assert [r[0] for r in rows] == expected
