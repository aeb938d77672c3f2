"""Benchmark: enrichment (a stream-table join + a windowed aggregate) next to a passthrough.

The input is the demo shop's shape: ``order_items`` insert events (3 partitions) and a
``products`` change topic of 1,000 products, written once per run as capture writes them. The
candidate is Sluiceway's processing application — order items joined with their product's
category, revenue derived, and revenue per category summed in one-minute tumbling windows —
with exactly-once Kafka transactions; it counts as done when its consumer group has committed
the input's end offsets. The baseline is a bare confluent-kafka loop over the same topic,
consuming and producing every record unchanged (acks=all, no transactions, no parsing): what
moving the bytes through Python costs at all.

Memory: ``sluiceway process run`` in its own process, its peak RSS (VmHWM) with a joined
``products`` table of 100,000 and of 1,000,000 rows (``--table-rows``), from its start — the
table view's bootstrap included — until it processed 50,000 order items joined across the
whole table. Each table's topics are written once; every run is a new worker (a new consumer
group) reading them from the start.

    python -m bench.enrich [--events 200000] [--runs 3] [--table-rows 1000000]
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from rich.console import Console

from bench.process import peak_rss_mb, write_spec
from bench.record import Figure, command, rss_budget, summarize
from sluiceway.pipeline import Pipeline
from sluiceway.settings import Settings
from streaming.events import ColumnSchema, TableSchema
from streaming.kafka.topics import ensure_topics
from streaming.processors.app import Processing

__all__ = ["main"]

console = Console()
MEMORY_ITEMS = 50_000  # order items each memory run processes (joined with every product)
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


PROCESSORS: list[dict[str, Any]] = [
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
]  # fmt: skip


def _prepare(settings: Settings, prefix: str, events: int, products: int = 1000) -> Pipeline:
    pipeline = Pipeline(
        name=prefix, source={"kind": "postgres"}, topics={"partitions": 3}, processors=PROCESSORS
    )
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
    for pid in range(1, products + 1):
        row = {"id": pid, "name": f"product {pid}", "category": CATEGORIES[pid % 8]}
        _produce(producer, f"{prefix}.public.products", _envelope(PRODUCTS, row, pid), pid)
    topic = f"{prefix}.public.order_items"
    for i in range(1, events + 1):
        row = {"id": i, "product_id": i % products + 1, "quantity": i % 5 + 1, "price": "12.50"}
        _produce(producer, topic, _envelope(ITEMS, row, i), i)
    producer.flush(120)
    return pipeline


def _produce(producer: Producer, topic: str, value: bytes, key: int) -> None:
    while True:
        try:
            producer.produce(topic, value, orjson.dumps({"id": key}))
            return
        except BufferError:
            producer.poll(0.1)


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
    _wait_committed(admin, processing.group, topic, ends, thread.is_alive)
    elapsed = time.perf_counter() - started
    processing.stop.set()
    thread.join(60)
    if processing.stats.events_in < events:
        raise RuntimeError(f"processed {processing.stats.events_in} of {events} events")
    return events / elapsed


def _wait_committed(
    admin: AdminClient, group: str, topic: str, ends: dict[int, int], alive: Callable[[], bool]
) -> None:
    """Until ``group`` has committed ``ends`` of ``topic`` (every input event processed)."""
    request = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in ends])]
    while True:
        offsets = admin.list_consumer_group_offsets(request)[group].result(timeout=10)
        done = {tp.partition: tp.offset for tp in offsets.topic_partitions}
        if all(done.get(p, -1) >= end for p, end in ends.items()):
            return
        if not alive():
            raise RuntimeError("processing stopped before the end of the input")
        time.sleep(0.2)


def _worker_rss(settings: Settings, directory: Path, prefix: str, number: int) -> float:
    """Peak RSS (MiB) of ``sluiceway process run`` in its own process, from its start (its
    table view's bootstrap included) until its group committed the whole input."""
    name = f"{prefix}w{number}"
    spec = write_spec(
        directory,
        {"name": name, "source": {"kind": "postgres"},
         "topics": {"partitions": 3, "prefix": prefix}, "processors": PROCESSORS},
    )  # fmt: skip
    log = directory / f"{name}.log"
    topic = f"{prefix}.public.order_items"
    ends = _ends(settings, topic)
    with log.open("w") as output:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sluiceway.cli", "process", "run", str(spec)],
            stdout=subprocess.DEVNULL,
            stderr=output,
        )
    try:
        admin = AdminClient(settings.kafka.client_config())
        try:
            _wait_committed(
                admin, f"sluiceway.{name}.proc", topic, ends, lambda: proc.poll() is None
            )
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}:\n{log.read_text()[-3000:]}") from None
        return peak_rss_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _memory(settings: Settings, table_rows: int, runs: int) -> list[Figure]:
    """The processing worker's peak RSS with a joined table of a tenth of ``table_rows``
    rows and of all of them; each table's topics are written once, read by every run."""
    small = table_rows // 10
    prefixes = {}
    for size in (small, table_rows):
        prefix = f"benchenrichmem{uuid.uuid4().hex[:6]}"
        console.print(f"writing a {size:,}-row products table and {MEMORY_ITEMS:,} order items")
        _prepare(settings, prefix, MEMORY_ITEMS, products=size)
        prefixes[size] = prefix
    rss: dict[int, list[float]] = {small: [], table_rows: []}
    with tempfile.TemporaryDirectory() as tmp:
        for number in range(1, runs + 1):
            for size, prefix in prefixes.items():
                rss[size].append(_worker_rss(settings, Path(tmp), prefix, number))
            console.print(
                f"  run {number}/{runs}: processing worker peak RSS {rss[small][-1]:.0f} MiB "
                f"({small:,}-row table), {rss[table_rows][-1]:.0f} MiB ({table_rows:,})"
            )
    return [
        rss_budget(f"processing worker peak RSS, {table_rows:,}-row joined table", rss[table_rows]),
        summarize(
            f"processing worker peak RSS growth, {small:,} -> {table_rows:,}-row joined table",
            "MiB",
            rss[table_rows],
            f"the same worker's peak RSS for a {small:,}-row joined table",
            rss[small],
            higher_is_better=False,
        ),
    ]


def run(settings: Settings, events: int, runs: int, table_rows: int) -> list[Figure]:
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
    if table_rows:
        figures += _memory(settings, table_rows, runs)
    return figures


def main() -> None:
    """Command-line entry: measure and record into docs/benchmarks.json."""

    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--table-rows",
            type=int,
            default=1_000_000,
            help="rows of the joined table for the worker's memory (and a tenth; 0: skip)",
        )

    command(__doc__, run, "events", 200_000, options)


if __name__ == "__main__":
    main()
