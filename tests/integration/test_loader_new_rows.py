"""PostgreSQL current state: a batch of new rows only is COPYed straight into the table, and
leaves exactly what the MERGE would; a stored or guarded key sends the batch to the MERGE."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from loaders import postgres as postgres_loader
from loaders.base import LoadBatch, RawRecords, TableBatch
from loaders.postgres import PostgresSink
from sluiceway.settings import Settings
from stack.manager import Stack
from streaming.events import ColumnSchema, TableSchema
from tests.integration.capture_support import temporary_database
from tests.integration.conftest import require

pytestmark = pytest.mark.integration

TOPIC = "p.public.plain"
SCHEMA = TableSchema(
    "public",
    "plain",
    (
        ColumnSchema("id", "int64", "int8", key=True),
        ColumnSchema("small", "int16", "int2"),
        ColumnSchema("real", "float64", "float8"),
        ColumnSchema("exact", "decimal", "numeric(38,10)", precision=38, scale=10),
        ColumnSchema("free", "decimal", "numeric"),
        ColumnSchema("flag", "boolean", "bool"),
        ColumnSchema('it\'s "odd"', "string", "text"),
        ColumnSchema("ident", "uuid", "uuid"),
        ColumnSchema("at", "timestamptz", "timestamptz"),
        ColumnSchema("local", "timestamp", "timestamp"),
        ColumnSchema("clock", "time", "time"),
        ColumnSchema("span", "interval", "interval"),
        ColumnSchema("doc", "json", "jsonb"),
    ),
)

ROWS: list[dict[str, Any]] = [
    {
        "id": 1, "small": -32768, "real": 0.1, "exact": "1234567890123456789012345678.0123456789",
        "free": "-0.000000000000000000000000000000000000000001", "flag": True,
        "it's \"odd\"": 'quote " backslash \\ tab \t newline \n emoji 😀, comma',
        "ident": "6f1c1a2e-9a53-4a4b-9f0e-0a5f5b8f2c11", "at": "1969-12-31T23:59:59.999999Z",
        "local": "2024-02-29T12:00:00.000001", "clock": "23:59:59.999999", "span": "P1Y2M3DT4H5M6S",
        "doc": '{"a": [1, 2.50], "b": "\\"q\\""}',
    },
    {
        "id": 2, "small": 32767, "real": "NaN", "exact": "-0.0000000001", "free": "1e-7",
        "flag": False, "it's \"odd\"": "", "ident": None, "at": "2038-01-19T03:14:07.5+00:00",
        "local": None, "clock": "00:00:00", "span": "PT0S", "doc": "null",
    },
    {
        "id": 3, "small": None, "real": "-Infinity", "exact": None, "free": None, "flag": None,
        "it's \"odd\"": None, "ident": None, "at": None, "local": None, "clock": None,
        "span": None, "doc": None,
    },
]  # fmt: skip


def _event(op: str, row: dict[str, Any], position: int) -> bytes:
    source = {
        "connector": "postgresql", "schema": "public", "table": "plain",
        "commit_lsn": position, "lsn": position, "schema_id": SCHEMA.id,
    }  # fmt: skip
    envelope = {
        "before": row if op == "d" else None,
        "after": None if op == "d" else row,
        "source": source,
        "op": op,
        "ts_ms": 1_700_000_000_000 + position,
    }
    return orjson.dumps(envelope)


def _batch(events: list[bytes], first: int) -> LoadBatch:
    raw = RawRecords(TOPIC)
    for offset, value in enumerate(events, first):
        raw.append(0, offset, None, value)
    batch = LoadBatch("g", offsets={(TOPIC, 0): first + len(events)})
    batch.tables[(TOPIC, SCHEMA.id)] = TableBatch(("public", "plain"), SCHEMA, raw)
    return batch


def _rows(sink: PostgresSink, table: str = "plain") -> list[str]:
    with sink.conn.cursor() as cur:
        cur.execute(f'SELECT (t::text) FROM "{sink.schema}".{table} t ORDER BY t.id')
        rows = [r[0] for r in cur.fetchall()]
    sink.conn.commit()
    return rows


@pytest.fixture
def sinks(
    settings: Settings, stack: Stack, unique: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[PostgresSink, PostgresSink, list[bool]]]:
    """A sink whose every COPY of new rows is recorded (True: it applied the batch), and one
    that always MERGEs."""
    require(stack, "postgres")
    copies: list[bool] = []
    original = PostgresSink._copy_new

    def recorded(self: PostgresSink, *args: Any) -> bool:
        applied = original(self, *args)
        if self.schema.endswith("_copy"):
            copies.append(applied)
            return applied
        assert not applied
        return applied

    monkeypatch.setattr(PostgresSink, "_copy_new", recorded)
    with temporary_database(settings, f"{unique}_target"):
        copying = PostgresSink(settings.postgres, f"{unique}_target", f"{unique}_copy")
        merging = PostgresSink(settings.postgres, f"{unique}_target", f"{unique}_merge")
        try:
            yield copying, merging, copies
        finally:
            copying.close()
            merging.close()


def _write(
    sink: PostgresSink, events: list[bytes], first: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prepare (as the loader's preparing thread does) and write; the merging sink's batches
    are never new rows to it."""
    with monkeypatch.context() as patch:
        if sink.schema.endswith("_merge"):
            patch.setattr(postgres_loader.sink, "_copyable", lambda columns: False)
        batch = _batch(events, first)
        if first % 2:
            sink.prepare(batch, "current")
        sink.write(batch, "current")


def test_new_rows_are_copied_and_equal_what_the_merge_leaves(
    sinks: tuple[PostgresSink, PostgresSink, list[bool]], monkeypatch: pytest.MonkeyPatch
) -> None:
    copying, merging, copies = sinks
    inserts = [_event("c", row, 10 + i) for i, row in enumerate(ROWS)]
    for sink in sinks[:2]:
        _write(sink, inserts, 0, monkeypatch)
    assert copies == [True]
    assert len(_rows(copying)) == 3
    assert _rows(copying) == _rows(merging)
    assert copying.stored_offsets("g") == {(TOPIC, 0): 3}

    # The same inserts again (a replay): every key is stored, the COPY fails, nothing changes.
    _write(copying, inserts, 1, monkeypatch)
    assert copies == [True, False]
    assert _rows(copying) == _rows(merging)

    # New keys and, in the middle of them, a newer insert of a stored key (a snapshot read of
    # it): the MERGE applies the batch, the new rows once and the stored key updated.
    changed = {**ROWS[1], "small": 7}
    mixed = [
        _event("c", {**ROWS[0], "id": 4}, 20),
        _event("r", changed, 21),
        _event("c", {**ROWS[2], "id": 5}, 22),
    ]
    for sink in sinks[:2]:
        _write(sink, mixed, 3, monkeypatch)
    assert copies == [True, False, False]
    assert _rows(copying) == _rows(merging)
    assert len(_rows(copying)) == 5
    assert copying.stored_offsets("g") == {(TOPIC, 0): 6}


def test_a_delete_guard_sends_new_rows_to_the_merge(
    sinks: tuple[PostgresSink, PostgresSink, list[bool]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An old insert of a deleted key, replayed among new rows, stays out; a newer one comes
    back, and with no guards left the next new rows are COPYed again."""
    copying, merging, copies = sinks
    batches = [
        [_event("c", ROWS[0], 10), _event("c", ROWS[1], 11)],
        [_event("d", ROWS[1], 40)],
        [_event("c", ROWS[1], 11), _event("c", ROWS[2], 12)],  # id 2 is older than its delete
        [_event("c", {**ROWS[1], "small": 9}, 50)],  # newer than the delete
        [_event("c", {**ROWS[0], "id": 6}, 60)],
    ]
    first = 0
    for number, events in enumerate(batches):
        for sink in sinks[:2]:
            _write(sink, events, first, monkeypatch)
        first += len(events)
        assert _rows(copying) == _rows(merging), f"after batch {number}"
        assert _rows(copying, "plain__deletes") == _rows(merging, "plain__deletes")
        if number == 2:
            ids = [r.split(",")[0] for r in _rows(copying)]
            assert ids == ["(1", "(3"]  # 2 stayed deleted
    # The delete is no batch of new rows; the two guarded batches fell back to the MERGE.
    assert copies == [True, False, False, False, True]
    assert _rows(copying, "plain__deletes") == []
    assert len(_rows(copying)) == 4
    assert ",9," in _rows(copying)[1]  # id 2 came back with the newer insert's values
