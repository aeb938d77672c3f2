"""Running a loader: continuous (the streaming half) or one time window (the batch half).

Both read a pipeline's change topics (``<prefix>.<schema>.<table>``) and hand micro-batches to
a `Sink`. The target's own stored offsets are the truth: on assignment the consumer seeks to
them, so after a crash between the target write and the Kafka commit nothing is applied twice
(the Kafka commit is kept for lag monitoring only). A bounded window is found with
``offsets_for_times``; loading the same window twice leaves identical rows, because current
state is position-guarded and history is unique per offset.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from loaders.base import LoadBatch, Mode, Sink, TableBatch
from loaders.changes import Change
from loaders.schemas import SchemaCatalog
from sluiceway.errors import SinkFatal
from sluiceway.pipeline import Pipeline
from sluiceway.settings import Settings

__all__ = ["LoadStats", "Loader"]

log = logging.getLogger(__name__)


@dataclass
class LoadStats:
    """What a running loader reports."""

    rows: int = 0
    batches: int = 0
    last_batch_rows: int = 0
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset, stored


class Loader:
    """Loads one pipeline's change topics into one sink."""

    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        sink: Sink,
        *,
        mode: Mode = "current",
        group: str | None = None,
        batch_rows: int = 20_000,
        batch_seconds: float = 0.5,
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.sink = sink
        self.mode = mode
        self.group = group or f"sluiceway.{pipeline.name}.{sink.name}"
        self.batch_rows = batch_rows
        self.batch_seconds = batch_seconds
        self.stop = threading.Event()
        self.stats = LoadStats()
        self.schemas = SchemaCatalog(settings.kafka, f"{pipeline.topic_prefix}.schemas")
        self.pattern = rf"^{re.escape(pipeline.topic_prefix)}\.[^.]+\.[^.]+$"

    def _consumer(self, group: str, instance: str | None = None) -> Any:
        config: dict[str, Any] = {}
        if instance:
            # Static membership: a restarted loader (same instance id) takes its partitions back
            # at once, instead of waiting for the dead member's session to time out.
            config = {"group.instance.id": instance, "session.timeout.ms": 10_000}
        return Consumer(
            {
                **self.settings.kafka.client_config(),
                **config,
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "topic.metadata.refresh.interval.ms": 5000,
                "enable.partition.eof": False,
            }
        )

    def _batch(self, messages: list[Any], group: str) -> LoadBatch:
        batch = LoadBatch(group)
        for msg in messages:
            if msg.error() is not None:
                continue
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            batch.offsets[(topic, partition)] = offset + 1
            change = Change.parse(topic, partition, offset, msg.key(), msg.value())
            if change is None or change.schema_id is None:
                continue
            # One entry per table and shape, in arrival order: an older shape's rows first.
            ref = (change.table, change.schema_id)
            entry = batch.tables.get(ref)
            if entry is None:
                entry = TableBatch(change.table, self.schemas.get(change.schema_id))
                batch.tables[ref] = entry
            entry.changes.append(change)
        return batch

    def _write(self, batch: LoadBatch) -> None:
        if not batch.offsets:
            return
        self.sink.write(batch, self.mode)
        self.stats.offsets.update(batch.offsets)
        rows = batch.rows()
        self.stats.rows += rows
        self.stats.batches += 1
        self.stats.last_batch_rows = rows

    # --- continuous ------------------------------------------------------------------------
    def run(self) -> None:
        """Load until `stop` is set."""
        consumer = self._consumer(self.group, f"{self.group}.{socket.gethostname()}")

        def on_assign(c: Any, partitions: list[TopicPartition]) -> None:
            stored = self.sink.stored_offsets(self.group)
            for tp in partitions:
                tp.offset = stored.get((tp.topic, tp.partition), OFFSET_BEGINNING)
            c.assign(partitions)

        consumer.subscribe([self.pattern], on_assign=on_assign)
        try:
            while not self.stop.is_set():
                messages = consumer.consume(self.batch_rows, timeout=self.batch_seconds)
                if not messages:
                    continue
                batch = self._batch(messages, self.group)
                self._write(batch)
                commits = [TopicPartition(t, p, o) for (t, p), o in batch.offsets.items()]
                consumer.commit(offsets=commits, asynchronous=True)
        finally:
            consumer.close()

    # --- bounded ---------------------------------------------------------------------------
    def load_window(self, start_ms: int, end_ms: int) -> int:
        """Load the events with timestamps in [start_ms, end_ms); returns the rows loaded."""
        consumer = self._consumer(f"{self.group}.window.{uuid.uuid4().hex[:8]}")
        try:
            metadata = consumer.list_topics(timeout=10)
            topics = [t for t in metadata.topics if re.match(self.pattern, t)]
            partitions = [(topic, p) for topic in topics for p in metadata.topics[topic].partitions]
            starts = consumer.offsets_for_times(
                [TopicPartition(t, p, start_ms) for t, p in partitions], timeout=15
            )
            ends = consumer.offsets_for_times(
                [TopicPartition(t, p, end_ms) for t, p in partitions], timeout=15
            )
            ranges: dict[tuple[str, int], tuple[int, int]] = {}
            for first, last in zip(starts, ends, strict=True):
                high = consumer.get_watermark_offsets(
                    TopicPartition(first.topic, first.partition), timeout=10
                )[1]
                begin = first.offset if first.offset >= 0 else high
                stop = last.offset if last.offset >= 0 else high
                if begin < stop:
                    ranges[(first.topic, first.partition)] = (begin, stop)
            if not ranges:
                return 0
            consumer.assign([TopicPartition(t, p, b) for (t, p), (b, _) in ranges.items()])
            remaining = dict(ranges)
            loaded = 0
            deadline = time.monotonic() + 600
            while remaining:
                if time.monotonic() > deadline:
                    raise SinkFatal(f"window [{start_ms}, {end_ms}) not read in 600 s")
                messages = consumer.consume(self.batch_rows, timeout=self.batch_seconds)
                inside = []
                for msg in messages:
                    if msg.error() is not None:
                        continue
                    key = (msg.topic(), msg.partition())
                    if key in remaining and msg.offset() < remaining[key][1]:
                        inside.append(msg)
                        if msg.offset() + 1 >= remaining[key][1]:
                            del remaining[key]
                batch = self._batch(inside, self.group)
                batch.offsets = {}  # a window never moves the continuous loader's offsets
                if batch.tables:
                    self.sink.write(batch, self.mode)
                    loaded += batch.rows()
            return loaded
        finally:
            consumer.close()
