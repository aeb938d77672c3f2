"""Every PostgreSQL type round-trips exactly, through the snapshot (COPY) and the stream
(pgoutput) alike, and an unchanged TOASTed value never masquerades as a real one."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from sluiceway.settings import Settings
from stack.manager import Stack
from streaming.events import UNAVAILABLE, TableSchema
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

DDL = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE TABLE typed (
  id int PRIMARY KEY,
  i2 smallint, i4 integer, i8 bigint,
  n numeric, n_scaled numeric(38, 10),
  r real, d double precision,
  b boolean, t text, vc varchar(10), ch char(3),
  by bytea,
  dt date, ts timestamp, tstz timestamptz, tm time, tmtz timetz, iv interval,
  u uuid, j json, jb jsonb,
  arr_i int[], arr_t text[], arr_2d int[][], arr_n numeric[],
  m mood, dom posint
);
"""

TEXT = 'ünïcødé 🎉 "quotes" \\ back\tslash\nnew line'

ROWS: dict[int, tuple[str, dict[str, Any]]] = {
    1: (
        "(%(id)s, 32767, -2147483648, 9223372036854775807,"
        " '12345678901234567890.123456789012345678901234567890', '-0.0000000001',"
        " 'NaN', 'Infinity', true, %(text)s, '', 'ab',"
        " '\\x00ff10', '1969-07-20', '1900-01-01 00:00:00.000001',"
        " '2024-02-29 23:59:59.999999+05:30', '23:59:59.999999', '12:00:00+02',"
        " '1 year 2 months 3 days 04:05:06.789', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',"
        ' \'{"b": 1, "a": [1.10, null]}\', \'{"b": 1, "a": 1.10}\','
        " '{1,NULL,3}', ARRAY['a b', 'c,d', 'NULL', NULL, '\"q\"', ''], '{{1,2},{3,4}}',"
        " '{1.50,NaN}', 'happy', 5)",
        {
            "i2": 32767, "i4": -2147483648, "i8": 9223372036854775807,
            "n": "12345678901234567890.123456789012345678901234567890",
            "n_scaled": "-0.0000000001",
            "r": "NaN", "d": "Infinity", "b": True, "t": TEXT, "vc": "", "ch": "ab ",
            "by": base64.b64encode(b"\x00\xff\x10").decode(),
            "dt": "1969-07-20", "ts": "1900-01-01T00:00:00.000001",
            "tstz": "2024-02-29T18:29:59.999999Z", "tm": "23:59:59.999999",
            "tmtz": "12:00:00+02", "iv": "P1Y2M3DT4H5M6.789S",
            "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "j": '{"b": 1, "a": [1.10, null]}', "jb": '{"a": 1.10, "b": 1}',
            "arr_i": [1, None, 3], "arr_t": ["a b", "c,d", "NULL", None, '"q"', ""],
            "arr_2d": [[1, 2], [3, 4]], "arr_n": ["1.50", "NaN"],
            "m": "happy", "dom": 5,
        },
    ),
    2: (
        "(%(id)s, NULL, 0, -9223372036854775808, 'Infinity', NULL, 1.5, '-Infinity', false,"
        " '', NULL, NULL, '\\x', '-infinity', 'infinity', '-infinity', '00:00:00', NULL,"
        " '-1 days -00:00:00.000001', NULL, 'null', '[]', '{}', '{}', NULL, NULL, 'sad', 1)",
        {
            "i2": None, "i4": 0, "i8": -9223372036854775808, "n": "Infinity",
            "n_scaled": None, "r": 1.5, "d": "-Infinity", "b": False, "t": "", "vc": None,
            "ch": None, "by": "", "dt": "-infinity", "ts": "infinity", "tstz": "-infinity",
            "tm": "00:00:00", "tmtz": None, "iv": "P-1DT-0.000001S", "u": None,
            "j": "null", "jb": "[]", "arr_i": [], "arr_t": [], "arr_2d": None, "arr_n": None,
            "m": "sad", "dom": 1,
        },
    ),
    3: (
        "(%(id)s, -32768, 1, 1, '0.000000000000000000000000000001', '99999999999999999999.1',"
        " '-Infinity', 0.1, NULL, 'x', 'y', 'abc', NULL, '0044-03-15 BC',"
        " '0001-01-01 12:00:00 BC', '1970-01-01 00:00:00+00', '12:34:56', '12:34:56.5-03:30',"
        " '0', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
        {
            "i2": -32768, "i4": 1, "i8": 1, "n": "0.000000000000000000000000000001",
            "n_scaled": "99999999999999999999.1000000000", "r": "-Infinity", "d": 0.1,
            "b": None, "t": "x", "vc": "y", "ch": "abc", "by": None,
            "dt": "-0043-03-15", "ts": "0000-01-01T12:00:00", "tstz": "1970-01-01T00:00:00Z",
            "tm": "12:34:56", "tmtz": "12:34:56.5-03:30", "iv": "PT0S", "u": None,
            "j": None, "jb": None, "arr_i": None, "arr_t": None, "arr_2d": None,
            "arr_n": None, "m": None, "dom": None,
        },
    ),
}  # fmt: skip


def _insert(conn: Any, row_id: int) -> None:
    template, _ = ROWS[row_id % 100]
    with conn.cursor() as cur:
        cur.execute("INSERT INTO typed VALUES " + template, {"id": row_id, "text": TEXT})


def test_every_type_round_trips_in_snapshot_and_stream(
    settings: Settings, stack: Stack, unique: str
) -> None:
    require(stack, "postgres")
    with temporary_database(settings, unique) as conn:
        with conn.cursor() as cur:
            cur.execute(DDL)
        for row_id in ROWS:
            _insert(conn, row_id)  # read by the snapshot
        with capture_running(settings, make_pipeline(unique)) as capture:
            wait_caught_up(capture, conn)
            for row_id in ROWS:
                _insert(conn, 100 + row_id)  # read from the log
            wait_caught_up(capture, conn)
        events = [orjson.loads(v) for _, v in read_topic(settings, f"{unique}.public.typed") if v]
        schemas = {
            orjson.loads(k)["id"]: TableSchema.from_json(orjson.loads(v))
            for k, v in read_topic(settings, f"{unique}.schemas")
            if k and v
        }
    shape = schemas[events[0]["source"]["schema_id"]]
    columns = {c.name: c for c in shape.columns}
    assert shape.key == ("id",)
    assert (columns["n_scaled"].type, columns["n_scaled"].precision, columns["n_scaled"].scale) == (
        "decimal", 38, 10,
    )  # fmt: skip
    assert (columns["n"].type, columns["n"].precision) == ("decimal", None)
    assert (columns["arr_i"].type, columns["arr_i"].items) == ("array", "int32")
    assert (columns["dom"].type, columns["m"].type) == ("int32", "string")
    assert (columns["tstz"].type, columns["vc"].source_type) == ("timestamptz", "varchar(10)")
    assert (columns["jb"].type, columns["by"].type, columns["u"].type) == ("json", "bytes", "uuid")
    by_id = {e["after"]["id"]: e for e in events}
    for row_id, (_, expected) in ROWS.items():
        for captured_id, op in ((row_id, "r"), (100 + row_id, "c")):
            event = by_id[captured_id]
            assert event["op"] == op
            after = {k: v for k, v in event["after"].items() if k != "id"}
            mismatched = {k: (after.get(k), v) for k, v in expected.items() if after.get(k) != v}
            assert not mismatched, f"row {captured_id} ({op}): (got, expected) {mismatched}"
            assert set(after) == set(expected)


@pytest.mark.parametrize("identity", ["DEFAULT", "FULL"])
def test_unchanged_toast_never_overwrites_the_real_value(
    settings: Settings, stack: Stack, unique: str, identity: str
) -> None:
    require(stack, "postgres")
    with temporary_database(settings, unique) as conn:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE docs (id int PRIMARY KEY, title text, body text)")
            cur.execute("ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL")
            cur.execute(f"ALTER TABLE docs REPLICA IDENTITY {identity}")
            cur.execute(
                "INSERT INTO docs SELECT g, 'v1', repeat(md5(g::text), 400) "
                "FROM generate_series(1, 3) g"
            )
        with capture_running(settings, make_pipeline(unique)) as capture:
            wait_caught_up(capture, conn)  # streaming: the updates come from the log
            with conn.cursor() as cur:
                cur.execute("UPDATE docs SET title = 'v2' WHERE id IN (1, 2)")
                cur.execute("UPDATE docs SET body = 'short' WHERE id = 2")
            wait_caught_up(capture, conn)
        records = read_topic(settings, f"{unique}.public.docs")
        updates = [orjson.loads(v) for _, v in records if v and orjson.loads(v)["op"] == "u"]
        first = next(e for e in updates if e["after"]["id"] == 1)
        if identity == "FULL":
            # The complete before image fills the value: no placeholder reaches Kafka.
            assert first["after"]["body"] == "c4ca4238a0b923820dcc509a6f75849b" * 400
            assert "unchanged" not in first
        else:
            assert first["after"]["body"] == UNAVAILABLE
            assert first["unchanged"] == ["body"]
        with conn.cursor() as cur:
            cur.execute("SELECT id, title, body FROM docs")
            source = {
                orjson.dumps({"id": r[0]}).decode(): {"id": r[0], "title": r[1], "body": r[2]}
                for r in cur.fetchall()
            }
        assert rebuild_state(records) == source


SERVER_DDL = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE TABLE plain (
  b_key text, a_key int,
  i2 smallint, i8 bigint, n numeric, n_scaled numeric(38, 10), b boolean,
  t text, vc varchar(10), "odd ""name"", é" text, u uuid, j json, jb jsonb,
  dt date, ts timestamp, tstz timestamptz, m mood, dom posint,
  PRIMARY KEY (a_key, b_key)
);
CREATE TABLE keyless (t text, tstz timestamptz);
"""
EDGE_TEXT = "".join(map(chr, range(1, 128))) + ' ünïcødé 🎉 "q" \\ \\N \\\\ \u2028'
SERVER_ROWS = [
    "(%(text)s, 1, 32767, 9223372036854775807, 'NaN', '-0.0000000001', true, %(text)s, '',"
    ' %(text)s, \'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\', \'{"b": "\\\\u00e9", "a": [1.10]}\','
    ' \'{"b": 1, "a": "\\""}\', \'0044-03-15 BC\', \'0001-01-01 12:00:00.5 BC\','
    " '0002-02-02 02:02:02.000001+00 BC', 'happy', 5)",
    "('x', 2, -32768, -9223372036854775808, 'Infinity', NULL, false, NULL, NULL, NULL, NULL,"
    " 'null', '[]', '-infinity', 'infinity', '-infinity', 'sad', 1)",
    "('', 3, NULL, 0, '-Infinity', '99999999999999999999.1', NULL, 'x', 'y', '', NULL, NULL,"
    " NULL, '10000-01-01', '2024-02-29 23:59:59.999999', '2024-02-29 23:59:59.999999+05:30',"
    " NULL, NULL)",
    "('y', 4, 0, 1, '12345678901234567890.123456789012345678901234567890', '0', true, 'z',"
    " 'zz', 'zzz', NULL, NULL, NULL, '0001-01-01', '0001-01-01 00:00:00', "
    " '1970-01-01 00:00:00+00', 'ok', 2)",
]


def _snapshot_events(
    settings: Settings, conn: Any, name: str, encoding: str, form: str
) -> tuple[dict[str, list[Any]], int]:
    """Snapshot the database into topics prefixed ``name``; the records of each table (key
    bytes and the value's parts, source fields that differ per pipeline left out) by key, and
    how many rows PostgreSQL encoded."""
    pipeline = make_pipeline(conn.info.dbname, snapshot_encoding=encoding, topics={"format": form})
    pipeline = pipeline.model_copy(update={"name": name})
    with capture_running(settings, pipeline) as capture:
        wait_caught_up(capture, conn)
        encoded = capture.stats.snapshot_encoded_in_server
    out: dict[str, list[Any]] = {}
    for table in ("plain", "keyless"):
        records = []
        for key, value in read_topic(settings, f"{name}.public.{table}"):
            assert value is not None
            event = orjson.loads(value)
            schema = None
            if form == "connect-json":
                schema, event = event["schema"], event["payload"]
                if key is not None:  # its schema names the pipeline
                    key = key.replace(name.encode(), b"<name>")
            source = {
                k: v
                for k, v in event["source"].items()
                if k not in {"name", "ts_ms", "lsn", "commit_lsn"}
            }
            after = list(event["after"].items())  # order matters: the same bytes
            if schema is not None:
                schema = orjson.dumps(schema).replace(name.encode(), b"<name>")
            records.append((key, list(event), after, source, event["op"], schema))
        out[table] = sorted(records, key=repr)
    return out, encoded


@pytest.mark.parametrize("form", ["json", "connect-json"])
def test_rows_postgresql_encodes_are_the_events_python_encodes(
    settings: Settings, stack: Stack, unique: str, form: str
) -> None:
    require(stack, "postgres")
    with temporary_database(settings, unique) as conn:
        with conn.cursor() as cur:
            cur.execute(SERVER_DDL)
            for template in SERVER_ROWS:
                cur.execute("INSERT INTO plain VALUES " + template, {"text": EDGE_TEXT})
            cur.execute(
                "INSERT INTO keyless VALUES (%s, '0044-03-15 12:00:00 BC'), (NULL, NULL)",
                (EDGE_TEXT,),
            )
        python, by_python = _snapshot_events(settings, conn, f"{unique}py", "python", form)
        server, by_server = _snapshot_events(settings, conn, f"{unique}pg", "server", form)
    assert (by_python, by_server) == (0, len(SERVER_ROWS) + 2)
    assert len(python["plain"]) == len(SERVER_ROWS) and len(python["keyless"]) == 2
    for table in ("plain", "keyless"):
        for ours, theirs in zip(python[table], server[table], strict=True):
            assert ours == theirs, f"{table}: python {ours} != server {theirs}"

    def key(record: Any) -> dict[str, Any]:
        found: dict[str, Any] = orjson.loads(record[0])
        return found["payload"] if form == "connect-json" else found

    assert {key(r)["b_key"] for r in python["plain"]} == {EDGE_TEXT, "x", "", "y"}
    first = next(r for r in python["plain"] if key(r)["a_key"] == 1)
    assert dict(first[2])["dt"] == "-0043-03-15" and dict(first[2])["ts"] == "0000-01-01T12:00:00.5"
    assert dict(first[2])["tstz"] == "-0001-02-02T02:02:02.000001Z"
    assert list(key(first)) == ["a_key", "b_key"]  # primary key order
