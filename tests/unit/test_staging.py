"""Staging a batch of raw envelopes in DuckDB: every change, or the newest per key."""

from __future__ import annotations

import orjson
import pytest

from loaders.base import LoadBatch, RawRecords, TableBatch
from loaders.staging import Stager
from sluiceway.errors import BadRecords
from streaming.events import ColumnSchema, TableSchema

SCHEMA = TableSchema(
    "public",
    "t",
    (
        ColumnSchema("id", "int64", "int8", key=True),
        ColumnSchema("region", "string", "text", key=True),
        ColumnSchema("v", "string", "text"),
    ),
)


def _event(op: str, row: dict[str, object], lsn: int) -> bytes:
    return orjson.dumps(
        {
            "before": row if op == "d" else None,
            "after": None if op == "d" else row,
            "source": {
                "schema": "public",
                "table": "t",
                "commit_lsn": lsn,
                "lsn": lsn,
                "schema_id": SCHEMA.id,
            },
            "op": op,
            "ts_ms": 5,
        }
    )


def _batch(values: list[bytes]) -> TableBatch:
    raw = RawRecords("p.public.t")
    for offset, value in enumerate(values):
        raw.append(offset % 2, offset, None, value)
    return TableBatch(("public", "t"), SCHEMA, raw)


def _load(table: TableBatch) -> LoadBatch:
    return LoadBatch("g", {("p.public.t", SCHEMA.id): table})


def _staged(stager: Stager) -> list[tuple[object, ...]]:
    return stager.query("SELECT id, region, v, __op, __lsn FROM staged ORDER BY id, region")


def test_newest_change_per_key_by_position_not_arrival() -> None:
    stager = Stager()
    batch = _batch(
        [
            _event("c", {"id": 1, "region": "eu", "v": "a"}, 10),
            _event("u", {"id": 1, "region": "eu", "v": "c"}, 30),
            _event("u", {"id": 1, "region": "eu", "v": "b"}, 20),  # a replay: arrives last
            _event("c", {"id": 1, "region": "us", "v": "x"}, 11),  # same id, other key
            _event("d", {"id": 2, "region": "eu", "v": "gone"}, 12),
        ]
    )
    assert stager.stage(batch, latest=True) == 3
    assert _staged(stager) == [
        ("1", "eu", "c", "u", 30),
        ("1", "us", "x", "c", 11),
        ("2", "eu", "gone", "d", 12),
    ]
    assert stager.stage(batch, latest=False) == 5  # history keeps every change


def test_a_batch_of_distinct_keys_is_staged_whole() -> None:
    stager = Stager()
    values = [_event("c", {"id": i, "region": "eu", "v": f"v{i}"}, i) for i in range(1, 1001)]
    assert stager.stage(_batch(values), latest=True) == 1000
    assert stager.query("SELECT count(DISTINCT id), min(v), max(__lsn) FROM staged") == [
        (1000, "v1", 1000)
    ]


def test_values_that_are_not_utf8_or_not_json_are_named() -> None:
    good = _event("c", {"id": 1, "region": "eu", "v": "a"}, 10)
    for bad in (b'{"op": "c", "after": {"v": "\xff"}}', b"not json"):
        with pytest.raises(BadRecords, match=r"p\.public\.t\[1\]@1") as caught:
            Stager().stage(_batch([good, bad]), latest=True)
        assert [(p, o) for _, p, o, _ in caught.value.records] == [(1, 1)]


def test_a_batch_prepared_in_one_stager_is_staged_by_another_as_it_would_stage_it() -> None:
    values = [
        _event("c", {"id": 1, "region": "eu", "v": "a"}, 10),
        _event("u", {"id": 1, "region": "eu", "v": "b"}, 20),
        _event("c", {"id": 2, "region": "eu", "v": "x"}, 11),
    ]
    direct = Stager()
    assert direct.stage(_batch(values), latest=True) == 2
    batch = _batch(values)
    Stager().prepare(_load(batch), "current", export=lambda s, _t: s.query("SELECT 'made'")[0][0])
    assert batch.prepared is not None and batch.prepared.rows.num_rows == 2
    writer = Stager()
    assert writer.stage(batch, latest=True) == 2
    assert _staged(writer) == _staged(direct)
    assert writer.exported == "made"  # what the export made where the batch was prepared
    assert writer.stage(batch, latest=False) == 3  # prepared for the other mode: staged anew
    assert writer.exported is None
    assert writer.stage(batch, latest=True) == 2  # and the prepared rows taken again


def test_a_batch_that_cannot_be_prepared_is_left_to_the_write_which_names_its_records() -> None:
    batch = _batch([_event("c", {"id": 1, "region": "eu", "v": "a"}, 10), b"not json"])
    Stager().prepare(_load(batch), "current")
    assert batch.prepared is None
    with pytest.raises(BadRecords, match=r"p\.public\.t\[1\]@1"):
        Stager().stage(batch, latest=True)
