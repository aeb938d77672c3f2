"""Processing parallelism and exactly-once with the real Kafka: two worker processes in one
consumer group split the partitions; one is killed with SIGKILL mid-stream; the other takes
over, and the output read with isolation.level=read_committed holds each result exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from sluiceway.pipeline import Pipeline
from sluiceway.settings import Settings
from stack.manager import Stack
from streaming.events import ColumnSchema, TableSchema
from streaming.kafka.topics import ensure_topics
from tests.integration.conftest import require

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(400)]

SHAPE = TableSchema(
    "public",
    "payments",
    (
        ColumnSchema("id", "int64", "int8", key=True),
        ColumnSchema("amount", "decimal", "numeric(10,2)", precision=10, scale=2),
    ),
)


def _events(producer: Producer, topic: str, ids: range) -> None:
    """Insert events of the payments table, as capture writes them."""
    for i in ids:
        value = {
            "before": None,
            "after": {"id": i, "amount": f"{i % 1000}.25"},
            "source": {"connector": "postgresql", "schema": "public", "table": "payments",
                       "commit_lsn": i, "lsn": i, "ts_ms": 1_790_000_000_000 + i,
                       "schema_id": SHAPE.id},
            "op": "c",
            "ts_ms": 0,
        }  # fmt: skip
        producer.produce(topic, orjson.dumps(value), orjson.dumps({"id": i}))
        producer.poll(0)
    producer.flush(30)


def _assignment(admin: AdminClient, group: str) -> list[int]:
    """How many partitions of the group's topics each member holds."""
    described = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return sorted(len(m.assignment.topic_partitions) for m in described.members)


def _processed(admin: AdminClient, group: str, topic: str, ends: dict[int, int]) -> bool:
    request = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in ends])]
    offsets = admin.list_consumer_group_offsets(request)[group].result(timeout=10)
    done = {tp.partition: tp.offset for tp in offsets.topic_partitions}
    return all(done.get(p, -1) >= end for p, end in ends.items())


class _Results(Counter[int]):
    doubled: dict[int, str]


def _results(settings: Settings, topic: str, expected: int, timeout: float = 90) -> _Results:
    """Results per input id in the committed output, read until ``expected`` distinct ids are
    visible (and 3 s more, to see any duplicate)."""
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"results-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([topic])
    found = _Results()
    found.doubled = {}
    deadline = time.monotonic() + timeout
    settle: float | None = None
    while time.monotonic() < (settle or deadline):
        message = consumer.poll(0.5)
        if message is None or message.error() is not None:
            continue
        after = orjson.loads(message.value())["after"]
        found[after["id"]] += 1
        found.doubled[after["id"]] = after["double"]
        if settle is None and len(found) >= expected:
            settle = time.monotonic() + 3
    consumer.close()
    return found


def _ends(settings: Settings, topic: str) -> dict[int, int]:
    consumer = Consumer({**settings.kafka.client_config(), "group.id": "ends"})
    try:
        return {
            p: int(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1])
            for p in range(3)
        }
    finally:
        consumer.close()


def _worker(spec: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "sluiceway.cli", "process", "run", str(spec)],
            stdout=out,  # a worker's error is printed there
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "120"},
        )


def _wait(
    condition: Any,
    what: str,
    timeout: float,
    logs: Path,
    workers: tuple[subprocess.Popen[bytes], ...] = (),
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if any(worker.poll() is not None for worker in workers):
            tail = logs.read_text()[-3000:]
            raise AssertionError(f"a worker exited before {what}; logs:\n{tail}")
        if time.monotonic() > deadline:
            tail = logs.read_text()[-3000:]
            raise AssertionError(f"{what} not reached in {timeout:.0f} s; logs:\n{tail}")
        time.sleep(0.5)


def test_two_workers_split_then_one_takes_over_exactly_once(
    settings: Settings, stack: Stack, unique: str, tmp_path: Path
) -> None:
    require(stack, "kafka")
    pipeline = Pipeline(
        name=unique,
        source={"kind": "postgres"},
        topics={"partitions": 3},
        processors=[{"name": "doubled", "source": "public.payments",
                     "derive": {"double": "amount * 2"}}],
    )  # fmt: skip
    admin = AdminClient(settings.kafka.client_config())
    source = f"{unique}.public.payments"
    ensure_topics(admin, [source], pipeline.topics)
    ensure_topics(admin, [f"{unique}.schemas"], pipeline.topics, partitions=1)
    producer = Producer({**settings.kafka.client_config(), "acks": "all", "linger.ms": 5})
    shape = orjson.dumps(SHAPE.to_json())
    producer.produce(f"{unique}.schemas", shape, orjson.dumps({"id": SHAPE.id}))
    _events(producer, source, range(1, 3001))
    spec = tmp_path / "payments.yaml"
    spec.write_text(yaml.safe_dump(pipeline.model_dump(mode="json", exclude_none=True)))
    logs = tmp_path / "workers.log"
    group = f"sluiceway.{unique}.proc"
    first, second = _worker(spec, logs), _worker(spec, logs)
    writer: threading.Thread | None = None
    try:
        # Parallelism by partitions: both workers hold some of the three.
        _wait(
            lambda: _assignment(admin, group) == [1, 2], "a 1+2 split", 120, logs, (first, second)
        )
        # More events while one worker is killed mid-stream.
        writer = threading.Thread(target=_events, args=(producer, source, range(3001, 9001)))
        writer.start()
        time.sleep(1.5)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        writer.join(60)
        # The survivor takes over every partition and finishes the work.
        _wait(lambda: _assignment(admin, group) == [3], "the takeover", 90, logs)
        ends = _ends(settings, source)
        _wait(lambda: _processed(admin, group, source, ends), "all input processed", 120, logs)
    finally:
        for worker in (first, second):
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
                worker.wait(60)
    # The killed worker's open transaction holds read_committed readers back until the broker
    # aborts it (transaction.timeout.ms, 15 s): read until every result is visible.
    ids = _results(settings, f"{unique}.enriched.doubled", 9000)
    assert set(ids) == set(range(1, 9001))  # every result ...
    assert [i for i, n in ids.items() if n > 1] == []  # ... exactly once
    assert ids.doubled[4242] == "484.50"
