"""Table shapes by schema id, read from the pipeline's ``<prefix>.schemas`` topic."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from sluiceway.errors import SinkFatal
from sluiceway.settings import KafkaSettings
from streaming.events import TableSchema

__all__ = ["SchemaCatalog"]


class SchemaCatalog:
    """Every table shape capture published; re-read when an event names one not seen yet."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self._kafka = kafka
        self.topic = topic
        self._schemas: dict[str, TableSchema] = {}

    def _read(self) -> None:
        consumer = Consumer(
            {
                **self._kafka.client_config(),
                "group.id": f"sluiceway-schemas-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
            }
        )
        try:
            metadata = consumer.list_topics(self.topic, timeout=10).topics.get(self.topic)
            if metadata is None or metadata.error is not None:
                return
            ends: dict[int, int] = {}
            for partition in metadata.partitions:
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(self.topic, partition), timeout=10
                )
                if high > 0:
                    ends[partition] = high
            consumer.assign([TopicPartition(self.topic, p, 0) for p in ends])
            while ends:
                msg = consumer.poll(1.0)
                if msg is None or msg.error() is not None:
                    continue
                if msg.value() is not None:
                    key: Any = orjson.loads(msg.key())
                    self._schemas[key["id"]] = TableSchema.from_json(orjson.loads(msg.value()))
                if msg.offset() + 1 >= ends.get(msg.partition(), 0):
                    ends.pop(msg.partition(), None)
        finally:
            consumer.close()

    def _wait(self, find: Callable[[], TableSchema | None], timeout: float) -> TableSchema | None:
        """``find()`` over what was read, re-reading the topic every 0.5 s until it gives a
        shape or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        found = find()
        while found is None and time.monotonic() <= deadline:
            self._read()
            found = find()
            if found is None:
                time.sleep(0.5)
        return found

    def get(self, schema_id: str, timeout: float = 30.0) -> TableSchema:
        """The shape ``schema_id`` names, waiting for it to appear if need be.

        Raises:
            SinkFatal: it did not appear within ``timeout`` seconds.
        """
        found = self._wait(lambda: self._schemas.get(schema_id), timeout)
        if found is None:
            raise SinkFatal(f"schema {schema_id} is not in {self.topic}; is capture running?")
        return found

    def latest(self, schema: str, table: str, timeout: float = 30.0) -> TableSchema | None:
        """The newest shape of ``schema.table`` in the topic (read again first), waiting up to
        ``timeout`` seconds for one: a processor started with capture may look before capture's
        first shape is readable (on a fresh broker, its topic is still being created)."""
        self._read()

        def newest() -> TableSchema | None:
            found = [s for s in self._schemas.values() if (s.schema, s.table) == (schema, table)]
            return found[-1] if found else None

        return self._wait(newest, timeout)
