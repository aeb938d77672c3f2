"""Reading change events back, and reducing a batch to the newest change per key."""

from __future__ import annotations

import orjson
import pytest

from loaders.base import latest_per_key
from loaders.changes import Change
from sluiceway.errors import SinkFatal
from streaming.events import UNAVAILABLE


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
