"""Join and window semantics on the real Kafka, with events written as capture writes them:
the table side inserted, updated and deleted before and after the stream side (left and inner
joins); late events inside and outside the grace period, the late ones in their side topic."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from sluiceway.pipeline import Pipeline
from sluiceway.settings import Settings
from stack.manager import Stack
from streaming.events import ColumnSchema, TableSchema
from streaming.kafka.topics import ensure_topics
from tests.integration.conftest import require
from tests.integration.test_processing import _committed, _latest, _processing

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

PRODUCTS = TableSchema(
    "public",
    "products",
    (ColumnSchema("id", "int64", "int8", key=True), ColumnSchema("category", "string", "text")),
)
ITEMS = TableSchema(
    "public",
    "items",
    (ColumnSchema("id", "int64", "int8", key=True), ColumnSchema("product_id", "int64", "int8")),
)
BASE_MS = 1_790_000_000_000  # event times below are offsets from here (a window boundary)


class Source:
    """Writes change events of the two tables, with increasing positions."""

    def __init__(self, settings: Settings, prefix: str) -> None:
        self.prefix = prefix
        self.position = 0
        self.producer = Producer({**settings.kafka.client_config(), "acks": "all"})
        admin = AdminClient(settings.kafka.client_config())
        topics = Pipeline(name=prefix, source={"kind": "postgres"}).topics
        ensure_topics(admin, [f"{prefix}.public.products", f"{prefix}.public.items"], topics)
        ensure_topics(admin, [f"{prefix}.schemas"], topics, partitions=1)
        for shape in (PRODUCTS, ITEMS):
            self.producer.produce(
                f"{prefix}.schemas", orjson.dumps(shape.to_json()), orjson.dumps({"id": shape.id})
            )
        self.producer.flush(10)

    def change(self, shape: TableSchema, op: str, row: dict[str, Any], at_ms: int = 0) -> None:
        self.position += 1
        envelope = {
            "before": row if op == "d" else None,
            "after": None if op == "d" else row,
            "source": {"connector": "postgresql", "schema": "public", "table": shape.table,
                       "commit_lsn": self.position, "lsn": self.position,
                       "ts_ms": BASE_MS + at_ms, "schema_id": shape.id},
            "op": op,
            "ts_ms": 0,
        }  # fmt: skip
        topic = f"{self.prefix}.public.{shape.table}"
        self.producer.produce(topic, orjson.dumps(envelope), orjson.dumps({"id": row["id"]}))
        self.producer.flush(10)


def _wait(condition: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_joins_see_the_table_as_it_stands_when_each_event_is_processed(
    settings: Settings, stack: Stack, unique: str
) -> None:
    require(stack, "kafka")
    source = Source(settings, unique)
    join = {"table": "public.products", "key": "product_id", "columns": {"category": "category"}}
    pipeline = Pipeline(
        name=unique,
        source={"kind": "postgres"},
        processors=[
            {"name": "left_joined", "source": "public.items", "join": [join]},
            {"name": "inner_joined", "source": "public.items", "join": [{**join, "how": "inner"}]},
        ],
    )
    # Before the stream side: an insert, an update, a delete of the table side.
    source.change(PRODUCTS, "c", {"id": 1, "category": "books"})
    source.change(PRODUCTS, "c", {"id": 2, "category": "toys"})
    source.change(PRODUCTS, "u", {"id": 2, "category": "games"})
    source.change(PRODUCTS, "c", {"id": 3, "category": "garden"})
    source.change(PRODUCTS, "d", {"id": 3, "category": "garden"})
    with _processing(settings, pipeline) as processing:
        for item, product in ((10, 1), (20, 2), (30, 3), (40, 4)):
            source.change(ITEMS, "c", {"id": item, "product_id": product})
        _wait(lambda: processing.stats.events_out >= 6, "the first items joined")
        # After the stream side: product 4 appears, product 1 changes; new items see both.
        source.change(PRODUCTS, "c", {"id": 4, "category": "tools"})
        source.change(PRODUCTS, "u", {"id": 1, "category": "comics"})
        view = processing._views["public.products"]
        _wait(lambda: view.get(4) is not None, "the insert seen")
        _wait(lambda: (view.get(1) or {}).get("category") == "comics", "the update seen")
        source.change(ITEMS, "c", {"id": 41, "product_id": 4})
        source.change(ITEMS, "c", {"id": 11, "product_id": 1})
        source.change(ITEMS, "u", {"id": 10, "product_id": 1})  # the old item, changed again
        _wait(lambda: processing.stats.events_out >= 11, "the later items joined")
        left = _latest(_committed(settings, f"{unique}.enriched.left_joined"))
        inner = _latest(_committed(settings, f"{unique}.enriched.inner_joined"))

    def categories(records: dict[bytes, dict[str, Any]]) -> dict[int, Any]:
        return {e["after"]["id"]: e["after"].get("category") for e in records.values()}

    assert categories(left) == {
        10: "comics",  # updated after product 1 changed: the new category
        20: "games",  # product 2's update before the item: seen
        30: None,  # product 3 deleted before the item: no match (left keeps it)
        40: None,  # product 4 did not exist yet; a later product does not re-emit the item
        41: "tools",
        11: "comics",
    }
    assert categories(inner) == {10: "comics", 20: "games", 41: "tools", 11: "comics"}


def test_late_events_inside_grace_count_and_outside_go_to_the_late_topic(
    settings: Settings, stack: Stack, unique: str
) -> None:
    require(stack, "kafka")
    source = Source(settings, unique)
    source.change(PRODUCTS, "c", {"id": 1, "category": "books"})
    pipeline = Pipeline(
        name=unique,
        source={"kind": "postgres"},
        topics={"partitions": 1},
        processors=[
            {
                "name": "per_product",
                "source": "public.items",
                "window": {"seconds": 10, "grace_seconds": 2, "key": "product_id",
                           "count": "items", "emit": "final", "late": "topic"},
            }
        ],
    )  # fmt: skip
    with _processing(settings, pipeline) as processing:
        # Event times (s): 0, 5, 11 (stream time 11), 9 (late by 1 s: inside the grace of the
        # window [0, 10)), 13 (stream time 13 closes it), 8 (outside the grace: late).
        for item, second in ((1, 0), (2, 5), (3, 11), (4, 9), (5, 13), (6, 8)):
            source.change(ITEMS, "c", {"id": item, "product_id": 1}, at_ms=second * 1000)
        _wait(lambda: processing.stats.events_in >= 6 and processing.stats.late >= 1, "late")
        # Processed is not yet committed: the result is read once the transaction holding it
        # commits (at a checkpoint, later on a busy machine than `_committed` waits).
        windows: dict[bytes, dict[str, Any]] = {}
        deadline = time.monotonic() + 90
        while not any(e["after"]["window_start"] == BASE_MS for e in windows.values()):
            assert time.monotonic() < deadline, "the window [0, 10) was never committed"
            windows = _latest(_committed(settings, f"{unique}.enriched.per_product"))
        late = _committed(settings, f"{unique}.enriched.per_product.late")
    first = next(e["after"] for e in windows.values() if e["after"]["window_start"] == BASE_MS)
    assert first["items"] == 3  # 0, 5 and the 9 that came within the grace period
    assert processing.stats.late == 1
    assert len(late) == 1
    record = late[0][1]
    assert record["row"]["id"] == 6 and record["timestamp_ms"] == BASE_MS + 8000
    assert record["window_start"] == BASE_MS and record["late_by_ms"] > 0
