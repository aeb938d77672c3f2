"""The producer capture writes through, and the tracker that says which position is safe.

Capture confirms a source position (an LSN, a binlog offset) only once Kafka has acknowledged
every event up to it: `DeliveryTracker` keeps the source transactions in commit order with
their outstanding deliveries, and `confirmed` is the end position of the last transaction that
has no outstanding delivery and none before it. The producer is idempotent with acks=all, so
Kafka keeps each partition in send order and a retried send is never duplicated.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from confluent_kafka import KafkaError as ConfluentKafkaError
from confluent_kafka import Producer

from sluiceway.errors import KafkaFatal
from sluiceway.settings import KafkaSettings

__all__ = ["Batch", "DeliveryTracker", "EventProducer"]


class Batch:
    """The events of one source transaction."""

    __slots__ = ("end", "outstanding", "sealed", "tracker")

    def __init__(self, tracker: DeliveryTracker) -> None:
        self.tracker = tracker
        self.outstanding = 0
        self.sealed = False
        self.end = 0

    def delivered(self, error: Any, _message: Any) -> None:
        """librdkafka's delivery callback for one event of this batch."""
        if error is not None:
            self.tracker.fail(error)
        self.outstanding -= 1


class DeliveryTracker:
    """Source positions in commit order, each released when all its events are acknowledged."""

    def __init__(self, start: int = 0) -> None:
        self._batches: deque[Batch] = deque()
        self._confirmed = start
        self.error: Any = None
        self._lock = threading.Lock()

    def open(self) -> Batch:
        """Start the batch of a new source transaction."""
        batch = Batch(self)
        with self._lock:
            self._batches.append(batch)
        return batch

    def begin_at(self, position: int) -> None:
        """Nothing before ``position`` is outstanding: confirm from there (a resumed stream)."""
        with self._lock:
            self._confirmed = max(self._confirmed, position)

    def seal(self, batch: Batch, end: int) -> None:
        """The transaction is complete; ``end`` is the position to confirm once delivered."""
        batch.end = end
        batch.sealed = True

    def fail(self, error: Any) -> None:
        """A delivery failed for good: nothing after it may be confirmed."""
        if self.error is None:
            self.error = error

    def confirmed(self) -> int:
        """The highest position whose events, and all before them, Kafka acknowledged."""
        with self._lock:
            if self.error is None:
                while self._batches:
                    head = self._batches[0]
                    if not head.sealed or head.outstanding > 0:
                        break
                    self._confirmed = max(self._confirmed, head.end)
                    self._batches.popleft()
        return self._confirmed

    def in_flight(self) -> int:
        """Events sent but not yet acknowledged."""
        with self._lock:
            return sum(b.outstanding for b in self._batches)


class EventProducer:
    """An idempotent, acks=all producer that counts each event against its batch."""

    def __init__(
        self,
        kafka: KafkaSettings,
        tracker: DeliveryTracker,
        *,
        each_delivery: bool = True,
        **overrides: Any,
    ) -> None:
        """``each_delivery=False`` is for bulk work awaited as a whole by `flush` (a snapshot):
        librdkafka reports only failed deliveries, so a million events cost no million Python
        callbacks; batches count nothing outstanding."""
        config: dict[str, Any] = {
            **kafka.client_config(),
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            # A bounded local queue: when Kafka is slower than decoding, `send` blocks and the
            # source is read more slowly, instead of memory growing with the backlog.
            "queue.buffering.max.messages": 200_000,
            "queue.buffering.max.kbytes": 65_536,
            "message.max.bytes": 16_777_216,
        }
        if not each_delivery:
            config["delivery.report.only.error"] = True
            config["on_delivery"] = self._failed
        config.update(overrides)
        self._producer = Producer(config)
        self.tracker = tracker
        self._each = each_delivery

    def _failed(self, error: Any, _message: Any) -> None:
        if error is not None:
            self.tracker.fail(error)

    def send(
        self,
        batch: Batch,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Queue one event; blocks (serving callbacks) while the local queue is full.

        Failed deliveries surface at the next `serve` or `flush` (the hot path does not check
        each send): nothing after a failure is ever confirmed, so nothing is lost meanwhile.
        """
        if not self._each:
            self._queue(topic, key, value, headers)
            return
        batch.outstanding += 1
        while True:
            try:
                if headers:
                    self._producer.produce(
                        topic, value, key, headers=headers, on_delivery=batch.delivered
                    )
                else:
                    self._producer.produce(topic, value, key, on_delivery=batch.delivered)
                return
            except BufferError:
                self._producer.poll(0.05)
                self.raise_if_failed()
            except Exception:
                batch.outstanding -= 1
                raise

    def send_all(self, topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
        """Queue (key, value) messages of bulk work (``each_delivery=False``), awaited as a
        whole by `flush`; blocks (serving callbacks) while the local queue is full."""
        if self._each:
            raise TypeError("send_all is for a producer made with each_delivery=False")
        for key, value in messages:
            self._queue(topic, key, value)

    def _queue(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Produce one message of bulk work, serving callbacks while the local queue is full."""
        while True:
            try:
                self._producer.produce(topic, value, key, headers=headers)
                return
            except BufferError:
                self._producer.poll(0.05)
                self.raise_if_failed()

    def serve(self, timeout: float = 0.0) -> None:
        """Run delivery callbacks."""
        self._producer.poll(timeout)
        self.raise_if_failed()

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for every queued event; returns how many are still queued."""
        left: int = self._producer.flush(timeout)
        self.raise_if_failed()
        return left

    def raise_if_failed(self) -> None:
        """Raise `KafkaFatal` if any delivery failed (nothing after it gets confirmed)."""
        error = self.tracker.error
        if error is not None:
            code = error.code() if hasattr(error, "code") else None
            name = ConfluentKafkaError(code).name() if code is not None else "unknown"
            raise KafkaFatal(f"Kafka refused an event ({name}): {error}")
