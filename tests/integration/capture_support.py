"""What capture tests share: a database per test, a capture thread, a topic read back by key."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from sluiceway.connect import postgres_connection
from sluiceway.pipeline import Pipeline, PostgresSource, TableSelection, TopicSettings
from sluiceway.settings import Settings
from streaming.sources import capture_for
from streaming.sources.postgres.capture import PostgresCapture
from streaming.sources.postgres.catalog import drop_slot
from streaming.sources.postgres.state import CaptureState

__all__ = [
    "capture_running",
    "make_pipeline",
    "read_topic",
    "rebuild_state",
    "temporary_database",
    "wait_caught_up",
]


@contextmanager
def temporary_database(settings: Settings, name: str) -> Iterator[Any]:
    """A fresh database (autocommit connection to it); dropped with its slots afterwards."""
    admin = postgres_connection(settings.postgres, database="postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn = postgres_connection(settings.postgres, database=name)
    conn.autocommit = True
    try:
        yield conn
    finally:
        with conn.cursor() as cur:
            cur.execute("SELECT slot_name FROM pg_replication_slots WHERE database = %s", (name,))
            slots = [r[0] for r in cur.fetchall()]
        for slot in slots:
            drop_slot(conn, slot, timeout=30)
        CaptureState.path(settings.state_dir, name).unlink(missing_ok=True)
        conn.close()
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def make_pipeline(name: str, include: list[str] | None = None, **source: Any) -> Pipeline:
    """A pipeline capturing database ``name`` into topics prefixed ``name``."""
    topics = source.pop("topics", {})
    return Pipeline(
        name=name,
        source=PostgresSource(
            database=name,
            tables=TableSelection(include=include or ["public.*"]),
            heartbeat_seconds=source.pop("heartbeat_seconds", 0.5),
            status_seconds=source.pop("status_seconds", 0.2),
            **source,
        ),
        topics=TopicSettings(**{"partitions": 3, **topics}),
    )


@contextmanager
def capture_running(settings: Settings, pipeline: Pipeline) -> Iterator[Any]:
    """Capture (of the pipeline's source kind) in a background thread; stopped gracefully
    afterwards. Errors fail the test."""
    capture = capture_for(settings, pipeline)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            capture.run()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        yield capture
    finally:
        capture.stop.set()
        thread.join(60)
    assert not thread.is_alive(), "capture did not stop within 60 s"
    if errors:
        raise errors[0]


def wait_caught_up(capture: PostgresCapture, conn: Any, timeout: float = 60.0) -> None:
    """Wait until capture confirmed a position past everything written so far."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
        target = int(cur.fetchone()[0])
    deadline = time.monotonic() + timeout
    while capture.stats.confirmed_lsn < target:
        if capture.error is not None:
            raise AssertionError(f"capture failed: {capture.error!r}") from capture.error
        assert time.monotonic() < deadline, (
            f"capture confirmed {capture.stats.confirmed_lsn}, not {target}, in {timeout}s "
            f"(phase {capture.stats.phase})"
        )
        time.sleep(0.1)


def read_topic(settings: Settings, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    """Every record of ``topic`` up to its end, in offset order per partition."""
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"reader-{topic}-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    metadata = consumer.list_topics(topic, timeout=10).topics[topic]
    partitions = [TopicPartition(topic, p, 0) for p in metadata.partitions]
    ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions}
    consumer.assign(partitions)
    records: list[tuple[bytes | None, bytes | None]] = []
    done = {p for p, end in ends.items() if end == 0}
    deadline = time.monotonic() + 60
    try:
        while len(done) < len(ends):
            assert time.monotonic() < deadline, "topic not read to its end in 60 s"
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            records.append((msg.key(), msg.value()))
            if msg.offset() + 1 >= ends[msg.partition()]:
                done.add(msg.partition())
    finally:
        consumer.close()
    return records


def rebuild_state(records: list[tuple[bytes | None, bytes | None]]) -> dict[str, dict[str, Any]]:
    """The latest row per key, deletes removing keys: what any keyed consumer would hold."""
    state: dict[str, dict[str, Any]] = {}
    for key, value in records:
        if value is None or key is None:
            continue
        envelope = orjson.loads(value)
        if envelope["op"] == "d":
            state.pop(key.decode(), None)
        elif envelope["op"] in ("c", "u", "r"):
            after = envelope["after"]
            old = state.get(key.decode(), {})
            for column in envelope.get("unchanged", []):
                after[column] = old.get(column)  # TOAST unchanged: keep what we hold
            state[key.decode()] = after
    return state
