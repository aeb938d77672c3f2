"""Stream processing with the real Kafka: the demo shop's enrichments from its change topics.

Orders meet their customer (a stream-table join), large orders are filtered out, order items
meet their product and revenue is summed per category per minute; the outputs are change
events any loader loads as tables; a poison record goes to the dead-letter topic and
processing goes on.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from loaders.duckdb import DuckDBSink
from loaders.runner import Loader
from orchestration.demo import Workload, create_shop
from sluiceway.pipeline import ErrorPolicy, JoinSpec, Pipeline, ProcessorSpec, WindowSpec
from sluiceway.settings import Settings
from stack.manager import Stack
from streaming.kafka.deadletter import HEADER
from streaming.processors.app import Processing
from tests.integration.capture_support import (
    capture_running,
    make_pipeline,
    read_topic,
    temporary_database,
    wait_caught_up,
)
from tests.integration.conftest import require
from tests.integration.test_loaders import _query

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROCESSORS = [
    ProcessorSpec(
        name="orders_enriched",
        source="public.orders",
        join=[
            JoinSpec(
                table="public.customers",
                key="customer_id",
                columns={"customer_name": "name", "customer_country": "country"},
            )
        ],
    ),
    ProcessorSpec(name="large_orders", source="public.orders", where="total >= 500"),
    ProcessorSpec(
        name="items",
        source="public.order_items",
        join=[
            JoinSpec(
                table="public.products",
                key="product_id",
                columns={"category": "category"},
                how="inner",
            )
        ],
        derive={"revenue": "price * quantity"},
    ),
    ProcessorSpec(
        name="revenue_per_category",
        source="items",
        window=WindowSpec(
            seconds=60,
            grace_seconds=5,
            key="category",
            sum={"revenue": "revenue"},
            count="items",
            emit="updates",
        ),
    ),
]


def _committed(settings: Settings, topic: str) -> list[tuple[bytes | None, dict[str, Any]]]:
    """Every committed record of a transactional topic (read_committed, until quiet).

    The first record may take a while: up to 10 s after the partitions are assigned (joining a
    new group waits out the broker's initial rebalance delay, and a busy processor commits its
    transaction at the next checkpoint); then until 3 s pass without one."""
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": uuid.uuid4().hex,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    assigned: list[float] = []
    consumer.subscribe([topic], on_assign=lambda *_: assigned.append(time.monotonic()))
    records = []
    quiet: float | None = None
    give_up = time.monotonic() + 60  # never assigned
    while time.monotonic() < (quiet if quiet is not None else give_up):
        msg = consumer.poll(0.5)
        if quiet is None and assigned:
            quiet = assigned[0] + 10
        if msg is not None and msg.error() is None:
            records.append((msg.key(), orjson.loads(msg.value())))
            quiet = time.monotonic() + 3
    consumer.close()
    return records


def _latest(records: list[tuple[bytes | None, dict[str, Any]]]) -> dict[bytes, dict[str, Any]]:
    """The newest event per key by source position — the order loaders apply (records of one
    key can reach the output out of order once a join re-keyed them)."""
    latest: dict[bytes, dict[str, Any]] = {}
    for key, envelope in records:
        assert key is not None
        source = envelope["source"]
        held = latest.get(key)
        position = (source["commit_lsn"], source["lsn"])
        if held is None or position >= (held["source"]["commit_lsn"], held["source"]["lsn"]):
            latest[key] = envelope
    return latest


@contextmanager
def _processing(settings: Settings, pipeline: Pipeline) -> Iterator[Processing]:
    processing = Processing(settings, pipeline)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            processing.run()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield processing
    finally:
        processing.stop.set()
        thread.join(60)
    if errors:
        raise errors[0]


def test_shop_enrichments(settings: Settings, stack: Stack, unique: str, tmp_path: Path) -> None:
    require(stack, "postgres")
    with temporary_database(settings, unique) as conn:
        create_shop(settings, database=unique, customers=20, products=10, orders=30)
        pipeline = make_pipeline(unique).model_copy(
            update={"processors": PROCESSORS, "errors": ErrorPolicy(tolerance="all")}
        )
        with capture_running(settings, pipeline) as capture:
            wait_caught_up(capture, conn)
            with _processing(settings, pipeline) as processing:
                workload = Workload(settings, database=unique, rate=40)
                thread = workload.start()
                time.sleep(2)
                # A poison record among the orders: dead-lettered, and processing goes on.
                producer = Producer(settings.kafka.client_config())
                producer.produce(f"{unique}.public.orders", b'{"hello": "not an event"}', b"{}")
                producer.flush(10)
                time.sleep(8)
                workload.stop.set()
                thread.join(10)
                wait_caught_up(capture, conn)
                _wait_processed(settings, processing.group, unique)
            assert processing.stats.dead_letters == 1
        assert workload.transactions > 50

        with conn.cursor() as cur:
            cur.execute(
                "SELECT o.id, c.name, c.country, o.total FROM orders o "
                "JOIN customers c ON c.id = o.customer_id"
            )
            orders = {row[0]: row[1:] for row in cur.fetchall()}
        enriched = _latest(_committed(settings, f"{unique}.enriched.orders_enriched"))
        alive = {orjson.loads(k)["id"]: e["after"] for k, e in enriched.items() if e["op"] != "d"}
        assert set(alive) == set(orders)
        for order, (name, country, _total) in orders.items():
            assert (alive[order]["customer_name"], alive[order]["customer_country"]) == (
                name,
                country,
            )

        large = _latest(_committed(settings, f"{unique}.enriched.large_orders"))
        kept = {orjson.loads(k)["id"] for k, e in large.items() if e["op"] != "d"}
        assert kept == {o for o, (_n, _c, total) in orders.items() if total >= 500}

        # Revenue per category and minute: every inserted item counted once, in some window.
        items = [
            orjson.loads(v) for _, v in read_topic(settings, f"{unique}.public.order_items") if v
        ]
        inserted = sum(
            Decimal(e["after"]["price"]) * e["after"]["quantity"] for e in items if e["op"] == "c"
        )
        windows = _latest(_committed(settings, f"{unique}.enriched.revenue_per_category"))
        assert sum(Decimal(e["after"]["revenue"]) for e in windows.values()) == inserted
        assert all(e["after"]["category"] for e in windows.values())
        assert processing.stats.late == 0

        letters = [h for _, h in _dead_letters(settings, pipeline.dead_letter_topic)]
        assert len(letters) == 1 and letters[0][HEADER + "stage"] == "process"
        assert letters[0][HEADER + "topic"] == f"{unique}.public.orders"

        # The enrichment topics load like any change topic: tables in the warehouse.
        sink = DuckDBSink(tmp_path / "w.duckdb", unique)
        Loader(settings, pipeline, sink, mode="current").load_window(0, 4_102_444_800_000)
        rows = _query(sink, f'SELECT id, customer_name FROM "{unique}".enriched_orders_enriched')
        assert dict(rows) == {o: name for o, (name, _c, _t) in orders.items()}
        sink.close()


def _wait_processed(settings: Settings, group: str, prefix: str, timeout: float = 180) -> None:
    """Until the processing group committed every record of the change topics."""
    consumer = Consumer({**settings.kafka.client_config(), "group.id": group})
    topics = [f"{prefix}.public.{t}" for t in ("orders", "order_items")]  # the event streams
    deadline = time.monotonic() + timeout
    try:
        while True:
            behind = 0
            for topic in topics:
                partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
                tps = [TopicPartition(topic, p) for p in partitions]
                for tp in consumer.committed(tps, timeout=10):
                    high = consumer.get_watermark_offsets(tp, timeout=10)[1]
                    behind += high - max(tp.offset, 0)
            if behind == 0:
                return
            assert time.monotonic() < deadline, f"processing is {behind} records behind"
            time.sleep(1)
    finally:
        consumer.close()


def _dead_letters(settings: Settings, topic: str) -> list[tuple[bytes, dict[str, str]]]:
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": uuid.uuid4().hex,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    found = []
    quiet = time.monotonic() + 6
    while time.monotonic() < quiet:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            found.append((msg.value(), {k: v.decode() for k, v in msg.headers() or []}))
    consumer.close()
    return found
