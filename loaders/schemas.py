"""Table shapes by schema id, read from the pipeline's ``<prefix>.schemas`` topic."""

from __future__ import annotations

import time
import uuid
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

    def get(self, schema_id: str, timeout: float = 30.0) -> TableSchema:
        """The shape ``schema_id`` names, waiting for it to appear if need be.

        Raises:
            SinkFatal: it did not appear within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while schema_id not in self._schemas:
            self._read()
            if schema_id in self._schemas:
                break
            if time.monotonic() > deadline:
                raise SinkFatal(f"schema {schema_id} is not in {self.topic}; is capture running?")
            time.sleep(0.5)
        return self._schemas[schema_id]
