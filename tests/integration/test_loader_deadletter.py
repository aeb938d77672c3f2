"""errors.tolerance at load: with `all`, what the target refuses is in the dead-letter topic with
its error and origin, and everything else is loaded; with `none`, the load stops naming it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from loaders.base import Sink
from loaders.runner import Loader
from sluiceway.connect import kafka_admin
from sluiceway.errors import SinkFatal
from sluiceway.pipeline import ErrorPolicy, Pipeline, PostgresSource, TopicSettings
from sluiceway.settings import Settings
from stack.manager import Stack
from streaming.events import ColumnSchema, TableSchema
from streaming.kafka.deadletter import HEADER
from streaming.kafka.topics import ensure_topics
from tests.integration.conftest import require
from tests.integration.test_loaders import _query, _sink, _table

pytestmark = [pytest.mark.integration]

NARROW = TableSchema(
    "public",
    "prices",
    (
        ColumnSchema("id", "int32", "int4", key=True),
        ColumnSchema("price", "decimal", "numeric(5,2)", precision=5, scale=2),
        ColumnSchema("code", "string", "text"),
    ),
)
# The same table after `ALTER COLUMN code TYPE integer`: stored text would not survive.
RETYPED = TableSchema(
    "public",
    "prices",
    (
        ColumnSchema("id", "int32", "int4", key=True),
        ColumnSchema("price", "decimal", "numeric(5,2)", precision=5, scale=2),
        ColumnSchema("code", "int32", "int4"),
    ),
)


def _event(schema: TableSchema, row: dict[str, Any], position: int) -> bytes:
    source = {
        "schema": "public",
        "table": "prices",
        "schema_id": schema.id,
        "commit_lsn": position,
        "lsn": position,
        "ts_ms": position,
    }
    return orjson.dumps(
        {"before": None, "after": row, "source": source, "op": "c", "ts_ms": position}
    )


def _produce(settings: Settings, prefix: str, records: list[tuple[bytes, bytes]]) -> None:
    admin = kafka_admin(settings.kafka)
    ensure_topics(admin, [f"{prefix}.public.prices"], TopicSettings(partitions=1))
    ensure_topics(
        admin, [f"{prefix}.schemas"], TopicSettings(cleanup_policy="compact"), partitions=1
    )
    producer = Producer(settings.kafka.client_config())
    for schema in (NARROW, RETYPED):
        producer.produce(
            f"{prefix}.schemas", orjson.dumps(schema.to_json()), orjson.dumps({"id": schema.id})
        )
    for key, value in records:
        producer.produce(f"{prefix}.public.prices", value, key)
    producer.flush(30)


def _dead_letters(settings: Settings, topic: str) -> list[tuple[bytes, dict[str, str]]]:
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": uuid.uuid4().hex,
            "enable.auto.commit": False,
        }
    )
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.assign([TopicPartition(topic, 0, 0)])
        found = []
        deadline = time.monotonic() + 30
        while len(found) < high and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error() is not None:
                continue
            headers = {k: v.decode() for k, v in msg.headers() or []}
            found.append((msg.value(), headers))
        return found
    finally:
        consumer.close()


@contextmanager
def _loaded(
    settings: Settings, unique: str, tmp_path: Path, kind: str, tolerance: str
) -> Iterator[tuple[Sink, Loader]]:
    key = lambda i: orjson.dumps({"id": i})  # noqa: E731 - a one-line helper
    records = [
        (key(1), _event(NARROW, {"id": 1, "price": "1.50", "code": "A"}, 10)),
        (key(2), b"\x00 not json"),
        (key(3), _event(NARROW, {"id": 3, "price": "123456.78", "code": "C"}, 12)),  # overflow
        (key(4), orjson.dumps({"hello": "not an envelope", "source": {}})),
        (key(5), _event(NARROW, {"id": 5, "price": "5.00", "code": "E"}, 14)),
        (key(6), _event(RETYPED, {"id": 6, "price": "6.00", "code": 66}, 15)),  # incompatible
    ]
    _produce(settings, unique, records)
    pipeline = Pipeline(
        name=unique,
        source=PostgresSource(),
        errors=ErrorPolicy(tolerance=tolerance),  # type: ignore[arg-type]
    )
    with _sink(kind, settings, unique, tmp_path / "w.duckdb") as sink:
        yield sink, Loader(settings, pipeline, sink, mode="current", batch_rows=100)


@pytest.mark.parametrize("kind", ["duckdb", "postgres"])
def test_tolerance_all_dead_letters_what_the_target_refuses(
    settings: Settings, stack: Stack, unique: str, tmp_path: Path, kind: str
) -> None:
    require(stack, "kafka")
    if kind == "postgres":
        require(stack, "postgres")
    with _loaded(settings, unique, tmp_path, kind, "all") as (sink, loader):
        loader.load_window(0, int(time.time() * 1000) + 3_600_000)
        rows = _query(sink, f"SELECT id, code FROM {_table(sink, unique, 'prices')} ORDER BY id")
        assert rows == [(1, "A"), (5, "E")]
        letters = _dead_letters(settings, f"{unique}.dlq")
        by_offset = {int(h[HEADER + "offset"]): (v, h) for v, h in letters}
        assert sorted(by_offset) == [1, 2, 3, 5], letters
        for offset, (_, headers) in by_offset.items():
            assert headers[HEADER + "topic"] == f"{unique}.public.prices"
            assert headers[HEADER + "partition"] == "0"
            assert headers[HEADER + "connector.name"] == unique
            assert headers[HEADER + "stage"] == "load"
            assert headers[HEADER + "exception.message"], offset
        assert by_offset[1][0] == b"\x00 not json"  # the record as it was
        assert by_offset[1][1][HEADER + "exception.class.name"] == "BadRecords"
        assert by_offset[3][1][HEADER + "exception.class.name"] == "BadRecords"
        assert by_offset[2][1][HEADER + "exception.class.name"] == "SinkFatal"  # overflow
        incompatible = by_offset[5][1]
        assert incompatible[HEADER + "exception.class.name"] == "IncompatibleChange"
        assert "code" in incompatible[HEADER + "exception.message"]
        assert loader.stats.dead_letters == 4


@pytest.mark.parametrize("kind", ["duckdb", "postgres"])
def test_tolerance_none_stops_naming_the_record(
    settings: Settings, stack: Stack, unique: str, tmp_path: Path, kind: str
) -> None:
    require(stack, "kafka")
    if kind == "postgres":
        require(stack, "postgres")
    with _loaded(settings, unique, tmp_path, kind, "none") as (_, loader):
        with pytest.raises(SinkFatal, match=rf"{unique}\.public\.prices\[0\]@1"):
            loader.load_window(0, int(time.time() * 1000) + 3_600_000)
        topics = kafka_admin(settings.kafka).list_topics(timeout=10).topics
        assert f"{unique}.dlq" not in topics
