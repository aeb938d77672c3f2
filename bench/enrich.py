"""Benchmark: enrichment (a stream-table join + a windowed aggregate) next to a passthrough.

The input is the demo shop's shape: ``order_items`` insert events (3 partitions) and a
``products`` change topic of 1,000 products, written once per run as capture writes them. The
candidate is Sluiceway's processing application — order items joined with their product's
category, revenue derived, and revenue per category summed in one-minute tumbling windows —
with exactly-once Kafka transactions; it counts as done when its consumer group has committed
the input's end offsets. The baseline is a bare confluent-kafka loop over the same topic,
consuming and producing every record unchanged (acks=all, no transactions, no parsing): what
moving the bytes through Python costs at all.

    python -m bench.enrich [--events 200000] [--runs 3]
"""

from __future__ import annotations

import threading
import time
import uuid

import orjson
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from rich.console import Console

from bench.record import Figure, command, summarize
from sluiceway.pipeline import Pipeline
from sluiceway.settings import Settings
from streaming.events import ColumnSchema, TableSchema
from streaming.kafka.topics import ensure_topics
from streaming.processors.app import Processing

__all__ = ["main"]

console = Console()
ITEMS = TableSchema(
    "public",
    "order_items",
    (
        ColumnSchema("id", "int64", "int8", key=True),
        ColumnSchema("product_id", "int64", "int8"),
        ColumnSchema("quantity", "int32", "int4"),
        ColumnSchema("price", "decimal", "numeric(10,2)", precision=10, scale=2),
    ),
)
PRODUCTS = TableSchema(
    "public",
    "products",
    (
        ColumnSchema("id", "int64", "int8", key=True),
        ColumnSchema("name", "string", "text"),
        ColumnSchema("category", "string", "text"),
    ),
)
CATEGORIES = ["books", "garden", "kitchen", "toys", "tools", "music", "sports", "office"]


def _envelope(shape: TableSchema, row: dict[str, object], position: int) -> bytes:
    return orjson.dumps(
        {
            "before": None,
            "after": row,
            "source": {
                "connector": "postgresql",
                "schema": shape.schema,
                "table": shape.table,
                "commit_lsn": position,
                "lsn": position,
                "ts_ms": 1_790_000_000_000 + position * 5,
                "schema_id": shape.id,
            },
            "op": "c",
            "ts_ms": 0,
        }
    )


def _prepare(settings: Settings, prefix: str, events: int) -> Pipeline:
    pipeline = Pipeline(
        name=prefix,
        source={"kind": "postgres"},
        topics={"partitions": 3},
        processors=[
            {
                "name": "items",
                "source": "public.order_items",
                "join": [
                    {"table": "public.products", "key": "product_id",
                     "columns": {"category": "category"}, "how": "inner"}
                ],
                "derive": {"revenue": "price * quantity"},
            },
            {
                "name": "revenue",
                "source": "items",
                "window": {"seconds": 60, "grace_seconds": 5, "key": "category",
                           "sum": {"revenue": "revenue"}, "count": "items", "emit": "final"},
            },
        ],
    )  # fmt: skip
    admin = AdminClient(settings.kafka.client_config())
    ensure_topics(admin, [f"{prefix}.public.order_items", f"{prefix}.public.products",
                          f"{prefix}.passthrough"], pipeline.topics)  # fmt: skip
    ensure_topics(admin, [f"{prefix}.schemas"], pipeline.topics, partitions=1)
    producer = Producer(
        {**settings.kafka.client_config(), "linger.ms": 20, "compression.type": "lz4"}
    )
    for shape in (ITEMS, PRODUCTS):
        producer.produce(
            f"{prefix}.schemas", orjson.dumps(shape.to_json()), orjson.dumps({"id": shape.id})
        )
    for pid in range(1, 1001):
        row = {"id": pid, "name": f"product {pid}", "category": CATEGORIES[pid % 8]}
        producer.produce(
            f"{prefix}.public.products", _envelope(PRODUCTS, row, pid), orjson.dumps({"id": pid})
        )
    topic = f"{prefix}.public.order_items"
    for i in range(1, events + 1):
        row = {"id": i, "product_id": i % 1000 + 1, "quantity": i % 5 + 1, "price": "12.50"}
        while True:
            try:
                producer.produce(topic, _envelope(ITEMS, row, i), orjson.dumps({"id": i}))
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(120)
    return pipeline


def _ends(settings: Settings, topic: str) -> dict[int, int]:
    consumer = Consumer({**settings.kafka.client_config(), "group.id": "ends"})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(3)
        }
    finally:
        consumer.close()


def _passthrough(settings: Settings, prefix: str, events: int) -> float:
    """Events/s of consume → produce, unchanged, over the whole input topic."""
    topic = f"{prefix}.public.order_items"
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"passthrough-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.min.bytes": 1_000_000,
            "fetch.wait.max.ms": 100,
        }
    )
    producer = Producer(
        {**settings.kafka.client_config(), "acks": "all", "linger.ms": 20,
         "compression.type": "lz4", "queue.buffering.max.messages": 500_000}
    )  # fmt: skip
    consumer.subscribe([topic])
    seen = 0
    started = time.perf_counter()
    while seen < events:
        for message in consumer.consume(10_000, 1.0):
            if message.error() is None:
                while True:
                    try:
                        producer.produce(f"{prefix}.passthrough", message.value(), message.key())
                        break
                    except BufferError:
                        producer.poll(0.05)
                seen += 1
        producer.poll(0)
    producer.flush(60)
    elapsed = time.perf_counter() - started
    consumer.close()
    return events / elapsed


def _enrich(settings: Settings, pipeline: Pipeline, events: int) -> float:
    """Events/s of the processing application over the same topic, until committed."""
    processing = Processing(settings, pipeline, group=f"sluiceway.{pipeline.name}.bench")
    topic = f"{pipeline.topic_prefix}.public.order_items"
    ends = _ends(settings, topic)
    admin = AdminClient(settings.kafka.client_config())
    thread = threading.Thread(target=processing.run, daemon=True)
    started = time.perf_counter()
    thread.start()
    request = [
        ConsumerGroupTopicPartitions(processing.group, [TopicPartition(topic, p) for p in ends])
    ]
    while True:
        offsets = admin.list_consumer_group_offsets(request)[processing.group].result(timeout=10)
        done = {tp.partition: tp.offset for tp in offsets.topic_partitions}
        if all(done.get(p, -1) >= end for p, end in ends.items()):
            break
        if not thread.is_alive():
            raise RuntimeError("processing stopped before the end of the input")
        time.sleep(0.2)
    elapsed = time.perf_counter() - started
    processing.stop.set()
    thread.join(60)
    if processing.stats.events_in < events:
        raise RuntimeError(f"processed {processing.stats.events_in} of {events} events")
    return events / elapsed


def run(settings: Settings, events: int, runs: int) -> list[Figure]:
    """Measure, print and return the figures."""
    baseline: list[float] = []
    enriched: list[float] = []
    for number in range(1, runs + 1):
        prefix = f"benchenrich{uuid.uuid4().hex[:6]}"
        console.print(f"run {number}/{runs}: writing {events:,} order item events")
        pipeline = _prepare(settings, prefix, events)
        baseline.append(_passthrough(settings, prefix, events))
        enriched.append(_enrich(settings, pipeline, events))
        console.print(
            f"  passthrough {baseline[-1]:,.0f} events/s; join + window {enriched[-1]:,.0f} "
            "events/s (exactly-once)"
        )
    figures = [
        summarize(
            "enrich events/s (stream-table join + windowed sum, exactly-once)",
            "events/s",
            enriched,
            "passthrough: bare confluent-kafka consume -> produce of the same topic",
            baseline,
        )
    ]
    return figures


def main() -> None:
    """Command-line entry: measure and record into docs/benchmarks.json."""
    command(__doc__, run, "events", 200_000)


if __name__ == "__main__":
    main()
