"""Reading change events back, and reducing a batch to the newest change per key."""

from __future__ import annotations

import orjson
import pytest

from loaders.base import latest_per_key
from loaders.changes import Change
from loaders.runner import Loader, _Archived
from sluiceway.errors import SinkFatal
from streaming.events import UNAVAILABLE, ColumnSchema, TableSchema


def _event(op: str, row: dict[str, object], commit: int, lsn: int, **extra: object) -> bytes:
    source = {"schema": "public", "table": "t", "commit_lsn": commit, "lsn": lsn, "schema_id": "s1"}
    envelope = {
        "before": row if op == "d" else None,
        "after": None if op == "d" else row,
        "source": source,
        "op": op,
        "ts_ms": 5,
        **extra,
    }
    return orjson.dumps(envelope)


def _change(op: str, row: dict[str, object], commit: int, lsn: int, **extra: object) -> Change:
    key = orjson.dumps({"id": row["id"]})
    change = Change.parse("p.public.t", 0, commit, key, _event(op, row, commit, lsn, **extra))
    assert change is not None
    return change


def test_parse_plain_and_connect_json_and_tombstones() -> None:
    plain = _change("u", {"id": 1, "v": "x"}, 10, 7)
    assert (plain.table, plain.op, plain.key, plain.position) == (
        ("public", "t"),
        "u",
        {"id": 1},
        (10, 7),
    )
    connect_value = orjson.dumps(
        {"schema": {}, "payload": orjson.loads(_event("d", {"id": 2}, 11, 8))}
    )
    connect_key = orjson.dumps({"schema": {}, "payload": {"id": 2}})
    deleted = Change.parse("p.public.t", 1, 3, connect_key, connect_value)
    assert (
        deleted is not None
        and deleted.op == "d"
        and deleted.row == {"id": 2}
        and deleted.key == {"id": 2}
    )
    assert Change.parse("p.public.t", 0, 4, b'{"id": 2}', None) is None
    with pytest.raises(SinkFatal, match=r"p.public.t\[0\]@9 is not a change event"):
        Change.parse("p.public.t", 0, 9, None, b"not json")


def test_latest_per_key_orders_by_position_not_arrival() -> None:
    newer = _change("u", {"id": 1, "v": "new"}, 20, 1)
    older = _change("u", {"id": 1, "v": "old"}, 10, 5)  # arrives later (a replay), is older
    other = _change("c", {"id": 2, "v": "x"}, 15, 1)
    assert [c.row for c in latest_per_key([newer, older, other])] == [
        {"id": 1, "v": "new"},
        {"id": 2, "v": "x"},
    ]


def test_unchanged_toast_values_carry_over_within_a_batch() -> None:
    first = _change("u", {"id": 1, "body": "big", "v": 1}, 10, 1)
    second = _change("u", {"id": 1, "body": UNAVAILABLE, "v": 2}, 11, 1, unchanged=["body"])
    (latest,) = latest_per_key([first, second])
    assert latest.row == {"id": 1, "body": "big", "v": 2}
    assert latest.unchanged == []
    lone = _change("u", {"id": 3, "body": UNAVAILABLE}, 12, 1, unchanged=["body"])
    assert latest_per_key([lone])[0].unchanged == ["body"]  # the target keeps its stored value


@pytest.mark.parametrize(
    ("have", "wanted", "expected"),
    [
        ("INTEGER", "BIGINT", True),
        ("bigint", "integer", False),  # an older, narrower shape: kept as is, never narrowed
        ("DECIMAL(6,2)", "DECIMAL(12,4)", True),
        ("numeric(12,4)", "numeric(6,2)", False),
        ("numeric(10,2)", "numeric(10,4)", False),  # more scale, fewer integer digits
        ("numeric(12,4)", "numeric", True),
        ("FLOAT", "DOUBLE", True),
        ("real", "double precision", True),
        ("INTEGER", "VARCHAR", True),
        ("text", "integer", False),
        ("character varying(10)", "character varying(20)", True),
        ("character varying(20)", "character varying(10)", False),
        ("TIMESTAMP", "TIMESTAMP WITH TIME ZONE", False),
    ],
)
def test_widening_rule(have: str, wanted: str, expected: bool) -> None:
    from loaders.sql import widens

    assert widens(have, wanted) is expected


def test_an_older_narrower_shape_fits_only_within_its_family() -> None:
    from loaders.sql import fits

    assert fits("integer", "bigint") and fits("DECIMAL(6,2)", "DECIMAL(12,4)")
    assert not fits("integer", "text")  # stored text, an integer shape: a real type change
    assert not fits("bigint", "integer") and not fits("integer", "integer")


class _Shapes:
    """The schema catalog, in memory: every id names a shape of ``t``."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def get(self, schema_id: str) -> TableSchema:
        self.asked.append(schema_id)
        return TableSchema("public", "t", (ColumnSchema("id", "int64", "int8", key=True),))


def _shaped(op: str, row: dict[str, object], lsn: int, schema_id: str) -> bytes:
    value = orjson.loads(_event(op, row, lsn, lsn))
    value["source"]["schema_id"] = schema_id
    return orjson.dumps(value)


def test_a_batch_groups_records_by_topic_and_shape_in_arrival_order() -> None:
    loader = Loader.__new__(Loader)  # grouping needs only the schema catalog
    shapes = _Shapes()
    loader.schemas = shapes  # type: ignore[assignment]
    t, u = "p.public.t", "p.public.u"
    connect = orjson.dumps(
        {"schema": {}, "payload": orjson.loads(_shaped("c", {"id": 9}, 9, "s2"))}
    )
    records = [
        (t, 0, 0, _shaped("c", {"id": 1}, 1, "s1")),
        (t, 0, 1, _shaped("c", {"id": 2, "v": '"schema_id":"s9"'}, 2, "s1")),  # in a value
        (t, 0, 2, None),  # a tombstone: skipped, its offset counts
        (t, 1, 0, _shaped("c", {"id": 3}, 3, "s1")),
        (t, 0, 3, _shaped("u", {"id": 1}, 4, "s2")),  # the shape changes mid-run
        (u, 0, 0, _shaped("c", {"id": 4}, 5, "s1")),
        (t, 0, 4, _shaped("u", {"id": 2}, 6, "s1")),  # back to the older shape
        (t, 0, 5, b"not json"),
        (t, 0, 6, connect),
        (t, 1, 1, _shaped("c", {"id": 5}, 7, "s1")),  # past its partition's end
    ]
    messages = [_Archived(topic, p, o, None, v) for topic, p, o, v in records]
    ends = {(t, 0): 10, (t, 1): 1, (u, 0): 10}
    batch = loader._batch(messages, "g", ends)  # type: ignore[arg-type]

    assert list(batch.tables) == [(t, "s1"), (t, "s2"), (u, "s1")]
    placed = {
        ref: list(zip(table.raw.partitions, table.raw.offsets, strict=True))
        for ref, table in batch.tables.items()
        if table.raw is not None
    }
    assert placed == {
        (t, "s1"): [(0, 0), (0, 1), (1, 0), (0, 4)],
        (t, "s2"): [(0, 3), (0, 6)],
        (u, "s1"): [(0, 0)],
    }
    assert [(p, o, v) for _, p, o, _, v, why in batch.rejected if why] == [(0, 5, b"not json")]
    assert batch.offsets == {(t, 0): 7, (t, 1): 1, (u, 0): 1}
    assert shapes.asked == ["s1", "s2", "s1"]  # once per topic and shape, not per record
