"""The dead-letter topic: records a stage could not process, with why, where and whence.

Kafka Connect's convention (``errors.tolerance = all`` with a dead-letter queue) is what
operators know, so the record keeps its key and value as they were and the context travels in
Connect's header names:

| header | value |
|---|---|
| ``__connect.errors.topic`` / ``.partition`` / ``.offset`` | the original record |
| ``__connect.errors.connector.name`` | the pipeline |
| ``__connect.errors.stage`` | capture, transform, serialize, load, process |
| ``__connect.errors.source.position`` / ``.source.table`` | capture: where in the source log |
| ``__connect.errors.exception.class.name`` / ``.exception.message`` | the error |

Sends are idempotent with acks=all, and `flush` waits for them: a stage moves its own position
past a dead-lettered record only after Kafka holds it (at least once: a crash in between sends
it again).
"""

from __future__ import annotations

import threading
from typing import Any

from confluent_kafka import Producer

from sluiceway.errors import KafkaFatal
from sluiceway.settings import KafkaSettings

__all__ = ["HEADER", "DeadLetters"]

HEADER = "__connect.errors."


class DeadLetters:
    """A producer to one dead-letter topic, counting what it sent."""

    def __init__(self, kafka: KafkaSettings, topic: str, pipeline: str, stage: str) -> None:
        self.topic = topic
        self.pipeline = pipeline
        self.stage = stage
        self.count = 0
        self._errors: list[str] = []
        self._lock = threading.Lock()
        self._producer = Producer(
            {**kafka.client_config(), "enable.idempotence": True, "acks": "all", "linger.ms": 5}
        )

    def _delivered(self, error: Any, _message: Any) -> None:
        if error is not None:
            with self._lock:
                self._errors.append(str(error))

    def send(
        self,
        key: bytes | None,
        value: bytes | None,
        error: BaseException,
        *,
        topic: str = "",
        partition: int = -1,
        offset: int = -1,
        context: dict[str, str] | None = None,
    ) -> None:
        """Queue one record for the dead-letter topic (`flush` to be sure it is there).
        ``context`` adds headers ``__connect.errors.<name>`` (capture: the source position
        and table, as a connector's own records have no topic offset yet)."""
        kind = type(error).__name__
        headers = [
            (HEADER + "topic", topic.encode()),
            (HEADER + "partition", str(partition).encode()),
            (HEADER + "offset", str(offset).encode()),
            (HEADER + "connector.name", self.pipeline.encode()),
            (HEADER + "stage", self.stage.encode()),
            (HEADER + "exception.class.name", kind.encode()),
            (HEADER + "exception.message", str(error)[:4000].encode()),
            *((HEADER + name, text.encode()) for name, text in (context or {}).items()),
        ]
        while True:
            try:
                self._producer.produce(
                    self.topic, value, key, headers=headers, on_delivery=self._delivered
                )
                break
            except BufferError:
                self._producer.poll(0.1)
        self.count += 1

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until Kafka holds every record sent.

        Raises:
            KafkaFatal: a record was refused, or not delivered in time.
        """
        left = self._producer.flush(timeout)
        if left:
            raise KafkaFatal(f"{left} records not delivered to {self.topic} in {timeout:.0f} s")
        with self._lock:
            if self._errors:
                raise KafkaFatal(f"dead-letter topic {self.topic}: {self._errors[0]}")
