"""Staging a batch of raw envelopes in DuckDB: every change, or the newest per key."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from loaders.base import LoadBatch, RawRecords, TableBatch
from loaders.staging import STAGING, Stager
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


def _prepared_tables(stager: Stager) -> int:
    return stager.query(f"SELECT count(*) FROM duckdb_tables() WHERE database_name = '{STAGING}'")[
        0
    ][0]


def test_a_prepared_batch_is_staged_by_the_write_as_it_would_stage_it_then_dropped() -> None:
    values = [
        _event("c", {"id": 1, "region": "eu", "v": "a"}, 10),
        _event("u", {"id": 1, "region": "eu", "v": "b"}, 20),
        _event("c", {"id": 2, "region": "eu", "v": "x"}, 11),
    ]
    direct = Stager()
    assert direct.stage(_batch(values), latest=True) == 2
    batch = _batch(values)
    writer = Stager()
    writer.prepare(_load(batch), "current", export=lambda s, _t: s.query("SELECT 'made'")[0][0])
    assert batch.prepared is not None and batch.prepared.count == 2
    assert _prepared_tables(writer) == 1
    assert writer.stage(batch, latest=True) == 2
    assert _staged(writer) == _staged(direct)
    assert writer.exported == "made"  # what the export made where the batch was prepared
    assert writer.stage(batch, latest=False) == 3  # prepared for the other mode: staged anew
    assert writer.exported is None
    assert writer.stage(batch, latest=True) == 2  # and the prepared rows taken again
    assert _staged(writer) == _staged(direct)
    writer.finish()  # the write is over: its prepared table goes
    assert _prepared_tables(writer) == 0
    assert writer.stage(batch, latest=True) == 2  # staged anew, the same rows
    assert _staged(writer) == _staged(direct) and writer.exported is None


def test_a_batch_prepared_by_another_stager_is_staged_anew() -> None:
    batch = _batch([_event("c", {"id": 1, "region": "eu", "v": "a"}, 10)])
    Stager().prepare(_load(batch), "current", export=lambda s, _t: "made")
    writer = Stager()
    assert writer.stage(batch, latest=True) == 1
    assert writer.exported is None  # not the other instance's work


def test_finish_drops_what_was_prepared_before_the_batch_written_but_not_after() -> None:
    writer = Stager()
    first, second, third = (
        _batch([_event("c", {"id": i, "region": "eu", "v": "a"}, i)]) for i in (1, 2, 3)
    )
    writer.prepare(_load(first), "history")  # never taken: the write stages it for current
    writer.prepare(_load(second), "current")
    writer.prepare(_load(third), "current")  # the next batch, prepared while one is written
    assert all(b.prepared is not None for b in (first, second, third))
    assert _prepared_tables(writer) == 3
    assert writer.stage(first, latest=True) == 1 and writer.stage(second, latest=True) == 1
    writer.finish()
    assert _prepared_tables(writer) == 1
    assert writer.stage(third, latest=True) == 1
    assert writer.query("SELECT id FROM staged") == [("3",)]


def test_a_batch_that_cannot_be_prepared_is_left_to_the_write_which_names_its_records() -> None:
    batch = _batch([_event("c", {"id": 1, "region": "eu", "v": "a"}, 10), b"not json"])
    Stager().prepare(_load(batch), "current")
    assert batch.prepared is None
    with pytest.raises(BadRecords, match=r"p\.public\.t\[1\]@1"):
        Stager().stage(batch, latest=True)


def _partitioned(values: list[bytes], places: list[tuple[int, int]]) -> TableBatch:
    raw = RawRecords("p.public.t")
    for (partition, offset), value in zip(places, values, strict=True):
        raw.append(partition, offset, None, value)
    return TableBatch(("public", "t"), SCHEMA, raw)


@pytest.mark.parametrize(("threads", "transaction"), [(1, False), (2, False), (1, True)])
def test_each_change_keeps_its_own_partition_and_offset(threads: int, transaction: bool) -> None:
    """Offsets come from each record's place in the batch: runs of consecutive offsets in
    interleaved partitions, gaps (transaction markers, compaction), a batch large enough for
    DuckDB to read it in several parts on two threads, and staging inside a transaction (as
    the DuckDB target does), whose own storage numbers rows from far above zero."""
    places: list[tuple[int, int]] = []
    for run in range(60):
        partition = run % 3
        first = 1_000 * run + (run % 7)  # runs of different lengths, with gaps between them
        places += [(partition, first + i) for i in range(37 + run * 41)]
    places += [(1, 10**12 + 2 * i) for i in range(500)]  # every other offset: runs of one
    pad = "x" * 300
    values = [
        _event("c", {"id": i, "region": "eu", "v": f"{p}:{o}:{pad}"}, i)
        for i, (p, o) in enumerate(places)
    ]
    stager = Stager(threads=threads, transactional=transaction)
    if transaction:
        stager.query("BEGIN TRANSACTION")
    few = 37 + 78 + 119  # three runs of three partitions: placed by a CASE per row
    for count in (37, few, len(places)):  # one run; a few; many, with runs of one (joined)
        assert stager.stage(_partitioned(values[:count], places[:count]), latest=False) == count
        staged = stager.query("SELECT v, __partition, __offset FROM staged")
        assert sorted((p, o) for _, p, o in staged) == sorted(places[:count])
        assert all(v.startswith(f"{p}:{o}:") for v, p, o in staged)  # each record its own


def test_values_that_are_not_one_json_line_are_staged_by_python() -> None:
    pretty = orjson.dumps(
        orjson.loads(_event("c", {"id": 2, "region": "eu", "v": "b"}, 12)),
        option=orjson.OPT_INDENT_2,
    )
    values = [_event("c", {"id": 1, "region": "eu", "v": "a"}, 11), pretty]
    stager = Stager()
    assert stager.stage(_batch(values), latest=True) == 2
    assert _staged(stager) == [("1", "eu", "a", "c", 11), ("2", "eu", "b", "c", 12)]
    with pytest.raises(BadRecords, match=r"p\.public\.t\[1\]@1"):
        stager.stage(_batch([values[0], b" "]), latest=True)  # blank: skipped by the reader


LOAD_A_BATCH = """
import sys
from pathlib import Path
from tests.unit.test_staging import SCHEMA, _batch, _event, _load
from loaders.duckdb import DuckDBSink
sink = DuckDBSink(Path(sys.argv[1]), "s")
python = _batch([_event("c", {"id": 2, "region": "eu", "v": "b"}, 2)])
python.raw.parse_in_python = True
for table in (_batch([_event("c", {"id": 1, "region": "eu", "v": "a"}, 1)]), python):
    batch = _load(table)
    sink.prepare(batch, "current")
    sink.write(batch, "current")
rows = sink.conn.execute("SELECT id, v FROM s.t ORDER BY id").fetchall()
sink.close()
print(rows, sorted(m for m in ("pyarrow", "numpy", "pandas") if m in sys.modules))
"""


def test_loading_into_duckdb_imports_no_pyarrow_numpy_or_pandas(tmp_path: Path) -> None:
    """The DuckDB loader's path from raw records to the target (bulk and Python parsing,
    prepared and not): pyarrow and the numpy it imports would cost ~75 MiB resident."""
    out = subprocess.run(
        [sys.executable, "-c", LOAD_A_BATCH, str(tmp_path / "w.duckdb")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[(1, 'a'), (2, 'b')] []"


def test_staged_rows_as_csv_keep_null_empty_and_awkward_text_apart() -> None:
    """What the PostgreSQL sink COPYs: every value exactly as staged, NULL distinct from ''."""
    awkward = [
        "",
        None,
        "a,b",
        'say "hi"',
        "two\nlines",
        " padded ",
        "\\.",
        "ünï €",
        "cr\r",
        "NULL",
    ]
    values = [_event("c", {"id": i, "region": "eu", "v": v}, 10 + i) for i, v in enumerate(awkward)]
    stager = Stager()
    assert stager.stage(_batch(values), latest=True) == len(awkward)
    data = stager.csv("SELECT id, v, __lsn FROM staged ORDER BY id")
    rows = list(csv.reader(io.StringIO(data.decode(), newline="")))
    assert [r[1] for r in rows] == ["" if v is None else v for v in awkward]
    # csv.reader cannot tell NULL from '': the quoting does (an empty field, or "")
    assert [line.split(",")[1] for line in data.decode().split("\n")[:2]] == ['""', ""]
    assert [int(r[2]) for r in rows] == [10 + i for i in range(len(awkward))]
    assert stager.csv("SELECT id, v FROM staged WHERE false") == b""


def test_the_postgresql_sink_imports_no_pyarrow() -> None:
    """Its CSV comes from DuckDB: pyarrow and numpy would cost the loader ~75 MiB resident."""
    code = (
        "import sys; import loaders.postgres; from loaders.staging import Stager; "
        "Stager().csv('SELECT 1, 2'); "
        "print(sorted(m for m in ('pyarrow', 'numpy', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
