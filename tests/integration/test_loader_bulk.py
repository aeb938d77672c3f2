"""The bulk path (raw envelopes parsed by the engine) leaves exactly the rows the Python path
leaves, for every type and edge value, in DuckDB and PostgreSQL."""

from __future__ import annotations

import base64
import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from loaders.base import LoadBatch, RawRecords, Sink, TableBatch
from loaders.duckdb import DuckDBSink
from loaders.postgres import PostgresSink
from sluiceway.errors import SinkFatal
from sluiceway.settings import Settings
from stack.manager import Stack
from streaming.events import ColumnSchema, TableSchema
from tests.integration.capture_support import temporary_database
from tests.integration.conftest import require

pytestmark = pytest.mark.integration

SCHEMA = TableSchema(
    "public",
    "edge",
    (
        ColumnSchema("id", "int64", "int8", key=True),
        ColumnSchema("small", "int16", "int2"),
        ColumnSchema("real", "float64", "float8"),
        ColumnSchema("exact", "decimal", "numeric(38,10)", precision=38, scale=10),
        ColumnSchema("free", "decimal", "numeric"),
        ColumnSchema("flag", "boolean", "bool"),
        ColumnSchema('it\'s "odd"', "string", "text"),
        ColumnSchema("ident", "uuid", "uuid"),
        ColumnSchema("blob", "bytes", "bytea"),
        ColumnSchema("day", "date", "date"),
        ColumnSchema("at", "timestamptz", "timestamptz"),
        ColumnSchema("local", "timestamp", "timestamp"),
        ColumnSchema("doc", "json", "jsonb"),
        ColumnSchema("nums", "array", "_int4", items="int32"),
        ColumnSchema("words", "array", "_text", items="string"),
    ),
)

ROWS: list[dict[str, Any]] = [
    {
        "id": 1, "small": -32768, "real": 0.1, "exact": "1234567890123456789012345678.0123456789",
        "free": "-0.000000000000000000000000000000000000000001", "flag": True,
        "it's \"odd\"": 'quote " backslash \\ tab \t newline \n emoji 😀 "schema_id":"x"',
        "ident": "6f1c1a2e-9a53-4a4b-9f0e-0a5f5b8f2c11",
        "blob": base64.b64encode(b"\x00\xff\\\n").decode(), "day": "-0043-03-15",
        "at": "1969-12-31T23:59:59.999999Z", "local": "2024-02-29T12:00:00.000001",
        "doc": '{"a": [1, 2.50], "b": "\\"q\\""}', "nums": [1, None, -2147483648],
        "words": ["a b", None, "c\"d", "{}"],
    },
    {
        "id": 2, "small": 32767, "real": "NaN", "exact": "-0.0000000001", "free": "1e-7",
        "flag": False, "it's \"odd\"": "", "ident": None, "blob": "", "day": "9999-12-31",
        "at": "2038-01-19T03:14:07.5+00:00", "local": None, "doc": "null", "nums": [],
        "words": None,
    },
    {
        "id": 3, "small": None, "real": "-Infinity", "exact": None, "free": None, "flag": None,
        "it's \"odd\"": None, "ident": None, "blob": None, "day": None, "at": None,
        "local": None, "doc": None, "nums": None, "words": None,
    },
]  # fmt: skip


def _events() -> list[tuple[bytes, bytes]]:
    """Inserts, updates arriving out of order, a delete, a truncate marker."""
    changes: list[tuple[str, dict[str, Any], int]] = []
    for i, row in enumerate(ROWS):
        changes.append(("c", row, 10 + i))
    updated = copy.deepcopy(ROWS[0])
    updated["real"] = 1.7976931348623157e308
    changes.append(("u", updated, 30))
    stale = copy.deepcopy(ROWS[0])
    stale["real"] = -1.0
    changes.append(("u", stale, 20))  # older than the update before it: must lose
    changes.append(("d", ROWS[2], 40))
    changes.append(("t", {}, 50))
    return [_event(op, row, position) for op, row, position in changes]


def _event(op: str, row: dict[str, Any], position: int) -> tuple[bytes, bytes]:
    source = {
        "connector": "postgresql", "schema": "public", "table": "edge",
        "commit_lsn": position, "lsn": position, "schema_id": SCHEMA.id,
    }  # fmt: skip
    envelope = {
        "before": row if op == "d" else None,
        "after": None if op in ("d", "t") else row,
        "source": source,
        "op": op,
        "ts_ms": 1_700_000_000_000 + position,
    }
    return orjson.dumps({"id": row.get("id")}), orjson.dumps(envelope)


def _batch(
    plain: bool, events: list[tuple[bytes, bytes]] | None = None, first: int = 0
) -> LoadBatch:
    raw = RawRecords("p.public.edge")
    for offset, (key, value) in enumerate(_events() if events is None else events, first):
        raw.append(offset % 2, offset, key, value)
    raw.parse_in_python = not plain  # forced through Python to compare
    batch = LoadBatch("g", offsets={("p.public.edge", 0): 99})
    batch.tables[("p.public.edge", SCHEMA.id)] = TableBatch(("public", "edge"), SCHEMA, raw)
    return batch


@contextmanager
def _sinks(kind: str, settings: Settings, name: str, tmp: Path) -> Iterator[tuple[Sink, Sink]]:
    if kind == "duckdb":
        bulk, parsed = DuckDBSink(tmp / "bulk.duckdb", name), DuckDBSink(tmp / "py.duckdb", name)
        yield bulk, parsed
        bulk.close()
        parsed.close()
        return
    with temporary_database(settings, f"{name}_target"):
        pg_bulk = PostgresSink(settings.postgres, f"{name}_target", f"{name}_bulk")
        pg_parsed = PostgresSink(settings.postgres, f"{name}_target", f"{name}_py")
        try:
            yield pg_bulk, pg_parsed
        finally:
            pg_bulk.close()
            pg_parsed.close()


def _same(value: Any) -> Any:
    return "NaN" if isinstance(value, float) and math.isnan(value) else value  # NaN != NaN


def _rows(sink: Sink, table: str) -> list[tuple[Any, ...]]:
    query = f"SELECT * FROM {sink.schema}.{table} ORDER BY 1, 2"  # type: ignore[attr-defined]
    if isinstance(sink, DuckDBSink):
        return [tuple(map(_same, r)) for r in sink.conn.execute(query).fetchall()]
    assert isinstance(sink, PostgresSink)
    with sink.conn.cursor() as cur:
        # Rows as PostgreSQL spells them: psycopg2 cannot return dates before year 1.
        cur.execute(f'SELECT (t::text) FROM "{sink.schema}".{table} t ORDER BY 1')
        rows = [tuple(map(_same, r)) for r in cur.fetchall()]
    sink.conn.commit()
    return rows


def _value(sink: Sink, query: str) -> Any:
    if isinstance(sink, DuckDBSink):
        return sink.conn.execute(query).fetchone()[0]  # type: ignore[index]
    assert isinstance(sink, PostgresSink)
    with sink.conn.cursor() as cur:
        cur.execute(query.replace(f"{sink.schema}.", f'"{sink.schema}".'))
        value = cur.fetchone()[0]  # type: ignore[index]
    sink.conn.commit()
    return value


@pytest.mark.parametrize("kind", ["duckdb", "postgres"])
def test_bulk_path_equals_python_path(
    settings: Settings, stack: Stack, unique: str, tmp_path: Path, kind: str
) -> None:
    if kind == "postgres":
        require(stack, "postgres")
    with _sinks(kind, settings, unique, tmp_path) as (bulk, parsed):
        bulk.write(_batch(plain=True), "both")
        parsed.write(_batch(plain=False), "both")
        current = _rows(bulk, "edge")
        assert current == _rows(parsed, "edge")
        assert len(current) == 2
        deleted = f"SELECT count(*) FROM {bulk.schema}.edge WHERE id = 3"  # type: ignore[attr-defined]
        assert _value(bulk, deleted) == 0
        newest = f"SELECT real FROM {bulk.schema}.edge WHERE id = 1"  # type: ignore[attr-defined]
        assert _value(bulk, newest) == 1.7976931348623157e308  # the newest update won
        assert _rows(bulk, "edge__history") == _rows(parsed, "edge__history")
        assert len(_rows(bulk, "edge__history")) == 6  # every change but the truncate marker
        assert _rows(bulk, "edge__deletes") == _rows(parsed, "edge__deletes") != []
        # Replaying the batch through the other path changes nothing.
        bulk.write(_batch(plain=False), "both")
        assert _rows(bulk, "edge") == current
        assert len(_rows(bulk, "edge__history")) == 6


@pytest.mark.parametrize("kind", ["duckdb", "postgres"])
@pytest.mark.parametrize("value", [b"not json", b'{"after": {"id": 1}}'])
def test_bulk_path_stops_at_a_record_that_is_not_an_event(
    settings: Settings, stack: Stack, unique: str, tmp_path: Path, kind: str, value: bytes
) -> None:
    if kind == "postgres":
        require(stack, "postgres")
    with _sinks(kind, settings, unique, tmp_path) as (bulk, _unused):
        batch = _batch(plain=True)
        raw = batch.tables[("p.public.edge", SCHEMA.id)].raw
        assert raw is not None
        raw.append(0, 7, None, value)
        with pytest.raises(SinkFatal, match=r"change event|json|JSON"):
            bulk.write(batch, "both")
        assert bulk.stored_offsets("g") == {}  # nothing of the batch was applied


@pytest.mark.parametrize("kind", ["duckdb", "postgres"])
def test_bulk_path_hands_toast_unchanged_and_connect_json_to_python(
    settings: Settings, stack: Stack, unique: str, tmp_path: Path, kind: str
) -> None:
    if kind == "postgres":
        require(stack, "postgres")
    text = 'it\'s "odd"'
    source = {"schema": "public", "table": "edge", "schema_id": SCHEMA.id}
    first = {**ROWS[1], text: "kept"}
    later = {**ROWS[1], text: "__debezium_unavailable_value", "small": 7}
    envelopes = [
        {"before": None, "after": first, "source": {**source, "commit_lsn": 5, "lsn": 5},
         "op": "c", "ts_ms": 1},
        {"before": None, "after": later, "source": {**source, "commit_lsn": 6, "lsn": 6},
         "op": "u", "ts_ms": 2, "unchanged": [text]},
    ]  # fmt: skip
    connect = {"schema": {"type": "struct"}, "payload": {**envelopes[0], "after": ROWS[0]}}
    with _sinks(kind, settings, unique, tmp_path) as (bulk, _unused):
        for values in ([envelopes[0]], [envelopes[1]], [connect]):
            raw = RawRecords("p.public.edge")
            for offset, value in enumerate(values):
                raw.append(0, offset, None, orjson.dumps(value))
            batch = LoadBatch("g")
            batch.tables[("p.public.edge", SCHEMA.id)] = TableBatch(("public", "edge"), SCHEMA, raw)
            bulk.write(batch, "current")
        table = f"{bulk.schema}.edge"  # type: ignore[attr-defined]
        assert _value(bulk, f"SELECT small FROM {table} WHERE id = 2") == 7
        # The TOAST-unchanged column kept the value the insert before it carried.
        assert _value(bulk, f'SELECT "it\'s ""odd""" FROM {table} WHERE id = 2') == "kept"
        # The Connect JSON envelope was read (through Python) like a plain one.
        assert _value(bulk, f"SELECT count(*) FROM {table} WHERE id = 1") == 1


@pytest.mark.parametrize("kind", ["duckdb", "postgres"])
def test_a_prepared_batch_leaves_the_rows_an_unprepared_one_leaves(
    settings: Settings, stack: Stack, unique: str, tmp_path: Path, kind: str
) -> None:
    """What the loader's preparing thread stages is what the write would stage, delete guards
    included: an old insert replayed after the delete stays out, a newer one comes back."""
    if kind == "postgres":
        require(stack, "postgres")
    revived = copy.deepcopy(ROWS[2])
    revived["small"] = 7
    later = [_event("c", ROWS[2], 15), _event("c", {**ROWS[0], "id": 4}, 16)]
    with _sinks(kind, settings, unique, tmp_path) as (prepared, direct):
        for mode in ("current", "history"):
            for first, events in ((0, None), (10, later), (20, [_event("c", revived, 60)])):
                batch = _batch(plain=True, events=events, first=first)
                prepared.prepare(batch, mode)
                for table in batch.tables.values():
                    assert table.raw is not None and table.prepared is not None
                    table.raw = RawRecords(table.raw.topic)  # the write has the prepared only
                prepared.write(batch, mode)
                direct.write(_batch(plain=True, events=events, first=first), mode)
                if mode == "current" and events is later:  # id 3 was deleted at 40
                    assert [r for r in _rows(prepared, "edge") if r[0] in (3, "3")] == []
        assert _rows(prepared, "edge") == _rows(direct, "edge")
        assert len(_rows(prepared, "edge")) == 4  # ids 1, 2, 4 and 3 inserted again at 60
        assert _rows(prepared, "edge__deletes") == _rows(direct, "edge__deletes") == []
        assert _rows(prepared, "edge__history") == _rows(direct, "edge__history")
        assert len(_rows(prepared, "edge__history")) == 6 + 2 + 1
