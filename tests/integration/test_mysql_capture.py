"""Binlog capture from the real MariaDB into the real Kafka: types, snapshot handoff under load,
kill -9 and resume, transforms that never leak, poison records in the dead-letter topic."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
import yaml
from confluent_kafka import Consumer, TopicPartition

from loaders.duckdb import DuckDBSink
from loaders.postgres import PostgresSink
from loaders.runner import Loader
from sluiceway.connect import mariadb_connection
from sluiceway.errors import ConfigError, RecordFailed
from sluiceway.pipeline import Pipeline
from sluiceway.settings import Settings
from streaming.sources.mysql.capture import BinlogPosition, MySQLCapture, encode_position
from tests.integration.capture_support import (
    capture_running,
    read_topic,
    rebuild_state,
    temporary_database,
)
from tests.integration.conftest import require

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def mariadb(settings: Settings, stack: Any, unique: str) -> Iterator[Any]:
    """A fresh database on the real MariaDB (autocommit); dropped afterwards."""
    require(stack, "mariadb")
    require(stack, "kafka")
    conn = mariadb_connection(settings.mariadb, autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{unique}` CHARACTER SET utf8mb4")
        cur.execute(f"USE `{unique}`")
        cur.execute("SET SESSION time_zone = '+00:00', sql_mode = ''")
    try:
        yield conn
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{unique}`")
        conn.close()
        BinlogPosition.path(settings.state_dir, unique).unlink(missing_ok=True)


def pipeline_of(name: str, **extra: Any) -> Pipeline:
    source = {"kind": "mysql", "database": name, "tables": {"include": [f"{name}.*"]}}
    source.update(extra.pop("source", {}))
    return Pipeline(
        name=name,
        source=source,
        topics={"partitions": 3, **extra.pop("topics", {})},
        **extra,
    )


def master_position(conn: Any) -> int:
    with conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        file, pos = cur.fetchone()[:2]
    return encode_position(str(file), int(pos))


def wait_caught_up(capture: MySQLCapture, conn: Any, timeout: float = 60.0) -> None:
    target = master_position(conn)
    deadline = time.monotonic() + timeout
    while capture.stats.confirmed_lsn < target:
        if capture.error is not None:
            raise AssertionError(f"capture failed: {capture.error!r}") from capture.error
        assert time.monotonic() < deadline, (
            f"capture at {capture.stats.confirmed_lsn}, not {target}"
        )
        time.sleep(0.1)


def source_rows(conn: Any, table: str) -> dict[str, dict[str, Any]]:
    with conn.cursor() as cur:
        cur.execute(f"SELECT id, name, qty, price FROM {table} ORDER BY id")
        return {
            orjson.dumps({"id": r[0]}).decode(): {
                "name": r[1],
                "qty": r[2],
                "price": format(r[3], "f"),
            }
            for r in cur.fetchall()
        }


def topic_rows(settings: Settings, topic: str) -> dict[str, dict[str, Any]]:
    state = rebuild_state(read_topic(settings, topic))
    return {k: {c: v[c] for c in ("name", "qty", "price")} for k, v in state.items()}


# --- item 1: every type, exact, snapshot and binlog alike ----------------------------------------
TYPES_DDL = """CREATE TABLE types (
  id INT PRIMARY KEY, u64 BIGINT UNSIGNED, i8 TINYINT, u8 TINYINT UNSIGNED, i64 BIGINT,
  dec1 DECIMAL(38,10), dec2 DECIMAL(65,30), dt DATETIME(6), ts TIMESTAMP(6) NULL, d DATE,
  zero DATE, t TIME(6), y YEAR, j JSON, bl BLOB, tx TEXT, b1 BIT(1), b10 BIT(10),
  e ENUM('small','large'), s SET('red','green','blue'), emoji VARCHAR(20), f FLOAT, db DOUBLE,
  vb VARBINARY(8)
)"""
TYPES_ROW = (
    "(%s, 18446744073709551615, -128, 255, -9223372036854775808, "
    "1234567890123456789012345678.0123456789, "
    "12345678901234567890123456789012345.123456789012345678901234567890, "
    "'2026-11-25 13:14:15.123456', '2038-01-19 03:14:07.999999', '1000-01-01', '0000-00-00', "
    "'-838:59:59.000000', 2155, '{\"k\": [1, 2.5, \"x\"], \"n\": null}', X'00FF7F', "
    "'naïve text', b'1', b'1000000001', 'large', 'blue,red', 'fish 🐟 and 😀', 0.1, "
    "1.7976931348623157e308, X'DEADBEEF')"
)
TYPES_EXPECTED = {
    "u64": "18446744073709551615",
    "i8": -128,
    "u8": 255,
    "i64": -9223372036854775808,
    "dec1": "1234567890123456789012345678.0123456789",
    "dec2": "12345678901234567890123456789012345.123456789012345678901234567890",
    "dt": "2026-11-25T13:14:15.123456",
    "ts": "2038-01-19T03:14:07.999999Z",
    "d": "1000-01-01",
    "zero": None,  # zero_dates: null (Debezium's behaviour)
    "t": "-838:59:59",
    "y": 2155,
    "bl": "AP9/",
    "tx": "naïve text",
    "b1": True,
    "b10": "1000000001",
    "e": "large",
    "s": "red,blue",
    "emoji": "fish 🐟 and 😀",
    "f": 0.1,
    "db": 1.7976931348623157e308,
    "vb": "3q2+7w==",
}


def test_every_type_round_trips_from_snapshot_and_binlog(
    settings: Settings, mariadb: Any, unique: str
) -> None:
    with mariadb.cursor() as cur:
        cur.execute(TYPES_DDL)
        cur.execute("INSERT INTO types VALUES " + TYPES_ROW % 1)  # read by the snapshot
    pipeline = pipeline_of(unique)
    with capture_running(settings, pipeline) as capture:
        while capture.stats.phase != "streaming":
            assert capture.error is None, capture.error
            time.sleep(0.1)
        with mariadb.cursor() as cur:
            cur.execute("INSERT INTO types VALUES " + TYPES_ROW % 2)  # read from the binlog
        wait_caught_up(capture, mariadb)
    events = [orjson.loads(v) for _k, v in read_topic(settings, f"{unique}.{unique}.types") if v]
    by_id = {e["after"]["id"]: e for e in events}
    assert by_id[1]["op"] == "r" and by_id[2]["op"] == "c"
    for event in (by_id[1], by_id[2]):
        after = event["after"]
        json_value = after.pop("j")
        assert orjson.loads(json_value) == {"k": [1, 2.5, "x"], "n": None}
        assert {k: after[k] for k in TYPES_EXPECTED} == TYPES_EXPECTED
        assert event["source"]["connector"] == "mysql"
    binlog = by_id[2]["source"]
    assert binlog["file"].startswith("mariadb-bin.") and binlog["pos"] > 0 and binlog["gtid"]
    assert binlog["commit_lsn"] > by_id[1]["source"]["commit_lsn"]
    # The published shape has the exact types loaders create tables from.
    shapes = [orjson.loads(v) for _k, v in read_topic(settings, f"{unique}.schemas") if v]
    columns = {c["name"]: c for c in shapes[-1]["columns"]}
    assert (columns["u64"]["type"], columns["u64"]["precision"]) == ("decimal", 20)
    assert (columns["dec2"]["precision"], columns["dec2"]["scale"]) == (65, 30)
    assert columns["j"]["type"] == "json" and columns["ts"]["type"] == "timestamptz"
    assert columns["id"]["key"] is True


# --- item 5: snapshot + streaming under a concurrent workload reconcile exactly ---------------
def _workload(conn: Any, stop: threading.Event, seed: int, first_id: int) -> int:
    """Small transactions of inserts, updates, deletes and key changes until stopped."""
    rng = random.Random(seed)
    next_id = first_id
    with conn.cursor() as cur:
        while not stop.is_set():
            cur.execute("BEGIN")
            for _ in range(rng.randint(1, 5)):
                action = rng.random()
                if action < 0.5:
                    cur.execute(
                        "INSERT INTO items VALUES (%s, %s, %s, %s)",
                        (
                            next_id,
                            f"item {next_id} 😀",
                            rng.randint(0, 9),
                            rng.randint(1, 99999) / 100,
                        ),
                    )
                    next_id += 1
                elif action < 0.8:
                    cur.execute(
                        "UPDATE items SET qty = qty + 1, price = price + 0.01 WHERE id = %s",
                        (rng.randint(1, next_id),),
                    )
                elif action < 0.95:
                    cur.execute("DELETE FROM items WHERE id = %s", (rng.randint(1, next_id),))
                else:
                    cur.execute(
                        "UPDATE items SET id = %s WHERE id = %s", (next_id, rng.randint(1, next_id))
                    )
                    next_id += 1
            cur.execute("COMMIT")
    return next_id


ITEMS_DDL = (
    "CREATE TABLE items (id BIGINT PRIMARY KEY, name VARCHAR(64), qty INT, price DECIMAL(10,2))"
)


def _seed(conn: Any, rows: int) -> None:
    with conn.cursor() as cur:
        cur.execute(ITEMS_DDL)
        cur.executemany(
            "INSERT INTO items VALUES (%s, %s, %s, %s)",
            [(i, f"item {i}", i % 10, (i % 1000) / 10) for i in range(1, rows + 1)],
        )


def test_snapshot_and_binlog_under_concurrent_writes_reconcile(
    settings: Settings, mariadb: Any, unique: str
) -> None:
    _seed(mariadb, 20_000)
    writer = mariadb_connection(settings.mariadb, database=unique, autocommit=True)
    stop = threading.Event()
    thread = threading.Thread(target=_workload, args=(writer, stop, 7, 20_001), daemon=True)
    thread.start()  # writing before, during and after the snapshot
    try:
        with capture_running(settings, pipeline_of(unique)) as capture:
            time.sleep(3)
            stop.set()
            thread.join(30)
            wait_caught_up(capture, mariadb)
            assert capture.stats.snapshot_rows >= 20_000
            assert capture.stats.transactions > 10
    finally:
        stop.set()
        writer.close()
    assert topic_rows(settings, f"{unique}.{unique}.items") == source_rows(mariadb, "items")


# --- item 5: kill -9 and resume --------------------------------------------------------------
def _spec_file(tmp_path: Path, pipeline: Pipeline) -> Path:
    path = tmp_path / f"{pipeline.name}.yaml"
    path.write_text(yaml.safe_dump(pipeline.model_dump(mode="json", exclude_none=True)))
    return path


def _start(spec: Path) -> subprocess.Popen[bytes]:
    with spec.with_suffix(".log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "sluiceway.cli", "capture", "run", str(spec)],
            stdout=subprocess.DEVNULL,
            stderr=log,
            env={**os.environ, "COLUMNS": "120"},
        )


def test_kill_9_mid_stream_then_resume_reconciles(
    settings: Settings, mariadb: Any, unique: str, tmp_path: Path
) -> None:
    _seed(mariadb, 5_000)
    pipeline = pipeline_of(unique, source={"status_seconds": 0.2})
    spec = _spec_file(tmp_path, pipeline)
    writer = mariadb_connection(settings.mariadb, database=unique, autocommit=True)
    stop = threading.Event()
    thread = threading.Thread(target=_workload, args=(writer, stop, 11, 5_001), daemon=True)
    state = BinlogPosition.path(settings.state_dir, unique)
    process = _start(spec)
    try:
        thread.start()
        deadline = time.monotonic() + 60
        while not (state.exists() and BinlogPosition.load(state).snapshot_done):  # type: ignore[union-attr]
            assert process.poll() is None, spec.with_suffix(".log").read_text()
            assert time.monotonic() < deadline, "snapshot did not finish"
            time.sleep(0.1)
        time.sleep(2)  # streaming, mid-workload
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        killed_at = BinlogPosition.load(state)
        time.sleep(1)  # changes made while capture is down
        process = _start(spec)
        time.sleep(2)
        stop.set()
        thread.join(30)
        target = master_position(mariadb)
        deadline = time.monotonic() + 60
        while True:
            saved = BinlogPosition.load(state)
            assert saved is not None and killed_at is not None
            if encode_position(saved.file, saved.pos) >= target:
                break
            assert process.poll() is None, spec.with_suffix(".log").read_text()
            assert time.monotonic() < deadline, "capture did not catch up after the restart"
            time.sleep(0.2)
    finally:
        stop.set()
        writer.close()
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    assert topic_rows(settings, f"{unique}.{unique}.items") == source_rows(mariadb, "items")


# --- item 3 and 5: transforms before Kafka; masked values never in a topic ---------------------
def _all_bytes(settings: Settings, topic: str) -> bytes:
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"raw-{topic}",
            "auto.offset.reset": "earliest",
        }
    )
    metadata = consumer.list_topics(topic, timeout=10).topics[topic]
    parts = [TopicPartition(topic, p, 0) for p in metadata.partitions]
    ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}
    consumer.assign(parts)
    chunks: list[bytes] = []
    seen = {p: 0 for p in ends}
    deadline = time.monotonic() + 30
    while any(seen[p] < ends[p] for p in ends) and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        seen[msg.partition()] = msg.offset() + 1
        chunks += [msg.key() or b"", msg.value() or b""]
        chunks += [name.encode() + value for name, value in msg.headers() or []]
    consumer.close()
    return b"\n".join(chunks)


def test_masked_and_hashed_values_never_reach_a_topic(
    settings: Settings, mariadb: Any, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_SALT", "pepper-1")
    with mariadb.cursor() as cur:
        cur.execute(
            "CREATE TABLE people (id INT PRIMARY KEY, email VARCHAR(80), ssn VARCHAR(11), "
            "card VARCHAR(19), city VARCHAR(40), note TEXT)"
        )
        cur.execute(
            "INSERT INTO people VALUES (1, 'ada@example.org', '123-45-6789', "
            "'4111111111111111', 'London', 'first')"
        )
    pipeline = pipeline_of(
        unique,
        transforms=[
            {"type": "hash", "fields": ["email"], "salt_env": "TEST_SALT"},
            {"type": "mask", "fields": ["ssn"]},
            {"type": "mask", "fields": ["card"], "length": 12, "keep_last": 4},
            {"type": "drop", "fields": ["note"]},
            {"type": "rename", "fields": {"city": "town"}},
            {"type": "lineage", "into": "headers"},
            {"type": "filter", "where": "town != 'Nowhere'"},
        ],
    )
    with capture_running(settings, pipeline) as capture:
        while capture.stats.phase != "streaming":
            assert capture.error is None, capture.error
            time.sleep(0.1)
        with mariadb.cursor() as cur:
            cur.execute(
                "INSERT INTO people VALUES (2, 'grace@example.org', '987-65-4321', "
                "'5500000000000004', 'Arlington', 'second')"
            )
            cur.execute("UPDATE people SET email = 'ada@example.com' WHERE id = 1")
            cur.execute(
                "INSERT INTO people VALUES (3, 'x@example.org', '000-00-0000', '1', 'Nowhere', '')"
            )
        wait_caught_up(capture, mariadb)
    topic = f"{unique}.{unique}.people"
    raw = _all_bytes(settings, topic) + _all_bytes(settings, f"{unique}.schemas")
    for secret in (b"ada@example", b"grace@example", b"123-45-6789", b"987-65-4321",
                   b"4111111111111111", b"first", b"second"):  # fmt: skip
        assert secret not in raw, secret
    events = [orjson.loads(v) for _k, v in read_topic(settings, topic) if v]
    assert len(events) == 3  # the snapshot row, id 2, the update of id 1; id 3 was filtered
    latest = rebuild_state(read_topic(settings, topic))
    ada = latest['{"id":1}']
    assert ada["email"] == hashlib.sha256(b"pepper-1ada@example.com").hexdigest()
    assert ada["ssn"] == "********" and ada["card"] == "************1111"
    assert ada["town"] == "London" and "city" not in ada and "note" not in ada
    assert latest['{"id":2}']["card"] == "************0004"
    shapes = {
        orjson.loads(k)["id"]: orjson.loads(v) for k, v in read_topic(settings, f"{unique}.schemas")
    }
    shape = shapes[events[-1]["source"]["schema_id"]]  # events name the transformed shape
    assert [c["name"] for c in shape["columns"]] == ["id", "email", "ssn", "card", "town"]
    assert {c["name"]: c["type"] for c in shape["columns"]}["email"] == "string"
    assert capture.emitter.filtered == 1


def test_a_transform_naming_a_missing_field_fails_naming_it(
    settings: Settings, mariadb: Any, unique: str
) -> None:
    with mariadb.cursor() as cur:
        cur.execute("CREATE TABLE people (id INT PRIMARY KEY, email VARCHAR(80))")
    pipeline = pipeline_of(unique, transforms=[{"type": "mask", "fields": ["e_mail"]}])
    capture = MySQLCapture(settings, pipeline)
    with pytest.raises(ConfigError, match=r"mask names field 'e_mail'.*it has: id, email"):
        capture.run()
    drop_key = pipeline_of(unique, transforms=[{"type": "drop", "fields": ["id"]}])
    with pytest.raises(ConfigError, match="would remove key field 'id'"):
        MySQLCapture(settings, drop_key).run()
    with pytest.raises(ConfigError, match="TEST_MISSING_SALT"):
        MySQLCapture(
            settings,
            pipeline_of(unique, transforms=[
                {"type": "hash", "fields": ["email"], "salt_env": "TEST_MISSING_SALT"}
            ]),
        )  # fmt: skip


# --- item 4: poison records to the dead-letter topic, or a named stop -------------------------
def test_poison_values_go_to_the_dead_letter_topic_while_the_rest_flows(
    settings: Settings, mariadb: Any, unique: str
) -> None:
    with mariadb.cursor() as cur:
        cur.execute("CREATE TABLE events (id INT PRIMARY KEY, day DATE, code VARCHAR(10))")
    pipeline = pipeline_of(
        unique,
        source={"zero_dates": "fail"},
        transforms=[{"type": "cast", "fields": {"code": "int64"}}],
        errors={"tolerance": "all"},
    )
    with capture_running(settings, pipeline) as capture:
        while capture.stats.phase != "streaming":
            assert capture.error is None, capture.error
            time.sleep(0.1)
        with mariadb.cursor() as cur:
            cur.execute("INSERT INTO events VALUES (1, '2026-11-25', '10')")
            cur.execute("INSERT INTO events VALUES (2, '0000-00-00', '20')")  # decode: zero date
            cur.execute("INSERT INTO events VALUES (3, '2026-11-26', 'abc')")  # transform: cast
            cur.execute("INSERT INTO events VALUES (4, '2026-11-27', '40')")
        wait_caught_up(capture, mariadb)
        assert capture.emitter.dead_letters == 2
    good = rebuild_state(read_topic(settings, f"{unique}.{unique}.events"))
    assert {k: v["code"] for k, v in good.items()} == {'{"id":1}': 10, '{"id":4}': 40}
    letters = dead_letters(settings, f"{unique}.dlq")
    letters.sort(key=lambda letter: letter[0]["__connect.errors.stage"])  # capture, transform
    assert len(letters) == 2
    (zero, zero_value), (cast, cast_value) = letters
    assert zero["__connect.errors.stage"] == "capture"
    assert zero["__connect.errors.exception.class.name"] == "ZeroDate"
    assert "'day'" in zero["__connect.errors.exception.message"]
    assert zero["__connect.errors.connector.name"] == unique
    assert zero["__connect.errors.source.table"] == f"{unique}.events"
    assert zero["__connect.errors.source.position"].startswith("mariadb-bin.")
    assert zero_value["after"]["id"] == 2
    assert cast["__connect.errors.stage"] == "transform"
    assert cast["__connect.errors.exception.class.name"] == "TransformError"
    assert "'code'" in cast["__connect.errors.exception.message"]
    assert cast_value["after"]["code"] == "abc" and cast["__connect.errors.topic"].endswith(
        ".events"
    )


def dead_letters(settings: Settings, topic: str) -> list[tuple[dict[str, str], Any]]:
    """Every dead letter of ``topic`` (all partitions): its headers and its value."""
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"dlq-{topic}",
            "auto.offset.reset": "earliest",
        }
    )
    metadata = consumer.list_topics(topic, timeout=10).topics[topic]
    parts = [TopicPartition(topic, p, 0) for p in metadata.partitions]
    total = sum(consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts)
    consumer.assign(parts)
    letters = []
    deadline = time.monotonic() + 30
    while len(letters) < total and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and not msg.error():
            headers = {k: v.decode() for k, v in msg.headers() or []}
            letters.append((headers, orjson.loads(msg.value())))
    consumer.close()
    return letters


def test_with_tolerance_none_a_poison_value_stops_capture_naming_it(
    settings: Settings, mariadb: Any, unique: str
) -> None:
    with mariadb.cursor() as cur:
        cur.execute("CREATE TABLE events (id INT PRIMARY KEY, day DATE)")
        cur.execute("INSERT INTO events VALUES (1, '0000-00-00')")
    capture = MySQLCapture(settings, pipeline_of(unique, source={"zero_dates": "fail"}))
    with pytest.raises(RecordFailed) as failed:
        capture.run()
    message = str(failed.value)
    assert f"pipeline {unique}, stage capture, table {unique}.events" in message
    assert "ZeroDate" in message and "'day'" in message and "mariadb-bin." in message


# --- binlog events load like any other: DuckDB and PostgreSQL targets ---------------------------
@pytest.mark.parametrize("kind", ["duckdb", "postgres"])
def test_binlog_events_load_exactly_into_targets(
    settings: Settings, mariadb: Any, unique: str, tmp_path: Path, kind: str
) -> None:
    with mariadb.cursor() as cur:
        cur.execute(TYPES_DDL)
        cur.execute("INSERT INTO types VALUES " + TYPES_ROW % 1)
    pipeline = pipeline_of(unique)
    with capture_running(settings, pipeline) as capture:
        while capture.stats.phase != "streaming":
            assert capture.error is None, capture.error
            time.sleep(0.1)
        with mariadb.cursor() as cur:
            cur.execute("INSERT INTO types VALUES " + TYPES_ROW % 2)
            cur.execute("INSERT INTO types VALUES " + TYPES_ROW % 3)
            cur.execute("UPDATE types SET emoji = 'changed 🐟', u64 = 0 WHERE id = 2")
            cur.execute("DELETE FROM types WHERE id = 3")
        wait_caught_up(capture, mariadb)
    table = f"{unique}_types"
    columns = "id, u64, dec1, dec2, dt, ts, zero, t, b1, b10, s, emoji, f, vb"
    if kind == "duckdb":
        path = tmp_path / "w.duckdb"
        sink = DuckDBSink(path, unique)
        Loader(settings, pipeline, sink, mode="current").load_window(0, 2**62)
        sink.close()
        with duckdb.connect(str(path)) as db:
            rows = db.execute(f'SELECT {columns} FROM "{unique}"."{table}" ORDER BY id').fetchall()
    else:
        with temporary_database(settings, f"{unique}_pg") as conn:
            sink = PostgresSink(settings.postgres, f"{unique}_pg", unique)
            Loader(settings, pipeline, sink, mode="current").load_window(0, 2**62)
            sink.close()
            with conn.cursor() as cur:
                cur.execute(f'SELECT {columns} FROM "{unique}"."{table}" ORDER BY id')
                rows = cur.fetchall()
    assert [r[0] for r in rows] == [1, 2]
    first, second = rows
    assert first[1] == Decimal("18446744073709551615") and second[1] == Decimal(0)
    assert Decimal(str(first[2])) == Decimal("1234567890123456789012345678.0123456789")
    assert Decimal(str(first[3])) == Decimal(TYPES_EXPECTED["dec2"])  # type: ignore[arg-type]
    assert first[4].isoformat() == "2026-11-25T13:14:15.123456"
    assert first[5].astimezone(UTC).isoformat() == "2038-01-19T03:14:07.999999+00:00"
    assert first[6] is None
    assert str(first[7]) in ("-838:59:59", "-35 days, 1:00:01")  # text, or an interval
    assert (first[8], first[9], first[10]) == (True, "1000000001", "red,blue")
    assert second[11] == "changed 🐟" and first[11] == "fish 🐟 and 😀"
    assert first[12] == pytest.approx(0.1) and bytes(first[13]) == b"\xde\xad\xbe\xef"
