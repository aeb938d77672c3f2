"""Table views of change topics: the current row of every key, for stream-table joins.

A `TableView` reads one change topic from the beginning in its own thread and keeps the newest
row per primary key (by source position; a delete removes the key). Processing starts only
once every view has read up to where its topic ended at start-up (bootstrap), so the first
events already meet the rows captured before them — the table is global (every partition in
every worker), so the event stream needs no re-keying to meet it. It is the "global table" of
Kafka Streams; the join is by processing time: an event meets the newest row read so far.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from sluiceway.errors import KafkaUnavailable
from sluiceway.settings import KafkaSettings

__all__ = ["TableView"]


class TableView:
    """The current rows of one change topic, keyed by a primary-key column's value."""

    def __init__(self, kafka: KafkaSettings, topic: str, key: str) -> None:
        self.topic = topic
        self.key = key
        self.rows: dict[str, dict[str, Any]] = {}
        self._positions: dict[str, tuple[int, int]] = {}
        self._kafka = kafka
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"table {topic}", daemon=True)

    def get(self, value: Any) -> dict[str, Any] | None:
        return self.rows.get(str(value))

    def start(self, timeout: float = 300.0) -> None:
        """Start reading; return once the view holds everything the topic held at start.

        Raises:
            KafkaUnavailable: it did not catch up in ``timeout`` seconds.
        """
        self._thread.start()
        if not self._ready.wait(timeout):
            raise KafkaUnavailable(f"table view of {self.topic} not loaded in {timeout:.0f} s")

    def stop(self) -> None:
        self._stop.set()

    def _apply(self, value: bytes | None) -> None:
        if value is None:
            return
        envelope = orjson.loads(value)
        envelope = envelope.get("payload", envelope) if "payload" in envelope else envelope
        op = envelope.get("op")
        if op not in ("c", "u", "r", "d"):
            return
        row = envelope["before"] if op == "d" else envelope["after"]
        if not isinstance(row, dict) or self.key not in row:
            return
        source = envelope.get("source") or {}
        position = (int(source.get("commit_lsn") or 0), int(source.get("lsn") or 0))
        key = str(row[self.key])
        if position < self._positions.get(key, (-1, -1)):
            return  # an older change of the key, from another partition
        self._positions[key] = position
        if op == "d":
            self.rows.pop(key, None)
        else:
            self.rows[key] = row

    def _run(self) -> None:
        consumer = Consumer(
            {
                **self._kafka.client_config(),
                "group.id": f"sluiceway-table-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        try:
            metadata = consumer.list_topics(self.topic, timeout=10).topics[self.topic]
            partitions = [TopicPartition(self.topic, p, 0) for p in metadata.partitions]
            ends = {
                p.partition: consumer.get_watermark_offsets(p, timeout=10)[1] for p in partitions
            }
            consumer.assign(partitions)
            pending = {p for p, end in ends.items() if end > 0}
            if not pending:
                self._ready.set()
            while not self._stop.is_set():
                for msg in consumer.consume(10_000, timeout=0.5):
                    if msg.error() is not None:
                        continue
                    try:
                        self._apply(msg.value())
                    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                        continue  # not an event: the event stream's dead-letter path names such
                    if msg.partition() in pending and msg.offset() + 1 >= ends[msg.partition()]:
                        pending.discard(msg.partition())
                        if not pending:
                            self._ready.set()
                if not pending and not self._ready.is_set():
                    self._ready.set()
        finally:
            consumer.close()
            time.sleep(0)
