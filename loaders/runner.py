"""Running a loader: continuous (the streaming half) or one time window (the batch half).

Both read a pipeline's change topics (``<prefix>.<schema>.<table>``) and hand micro-batches to
a `Sink`. The target's own stored offsets are the truth: on assignment the consumer seeks to
them, so after a crash between the target write and the Kafka commit nothing is applied twice
(the Kafka commit is kept for lag monitoring only). A bounded window is found with
``offsets_for_times``; loading the same window twice leaves identical rows, because current
state is position-guarded and history is unique per offset.
"""

from __future__ import annotations

import gc
import logging
import re
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from loaders.base import LoadBatch, Mode, RawRecords, Sink, TableBatch
from loaders.changes import Change
from loaders.schemas import SchemaCatalog
from sluiceway.connect import kafka_admin
from sluiceway.errors import BadRecords, IncompatibleChange, SinkFatal
from sluiceway.pipeline import Pipeline, TopicSettings
from sluiceway.settings import Settings
from streaming.kafka.deadletter import DeadLetters
from streaming.kafka.fetch import SHALLOW_FETCH
from streaming.kafka.topics import ensure_topics

if TYPE_CHECKING:  # imported by whoever passes one: boto3 costs a loader ~20 MiB resident
    from loaders.s3.archive import ArchiveReader

__all__ = ["FETCH", "LoadStats", "Loader", "interpreter_tuned"]

log = logging.getLogger(__name__)


@dataclass
class LoadStats:
    """What a running loader reports."""

    rows: int = 0
    batches: int = 0
    last_batch_rows: int = 0
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset, stored
    dead_letters: int = 0  # records sent to the dead-letter topic


_SCHEMA_ID = b'"schema_id":"'
"""How capture writes ``source.schema_id``; its last occurrence in an envelope is the real one,
since ``source`` follows ``before`` and ``after`` (whose JSON values could hold the same text)."""
_NO_END = 1 << 62


class _Archived:
    """An archived record, read like a consumed message."""

    __slots__ = ("_key", "_offset", "_partition", "_topic", "_value")

    def __init__(
        self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes
    ) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset
        self._key, self._value = key, value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes:
        return self._value


FETCH = SHALLOW_FETCH
"""The loader's fetch settings (`streaming.kafka.fetch`: why a shallow queue)."""


SWITCH_INTERVAL = 0.0005
"""Seconds between the interpreter's GIL hand-overs while a loader reads and writes at once."""

CONSUME_CHUNK = 5_000
"""Records taken from the consumer per call while a batch is read (see `_consume`)."""

GC_YOUNG = 100_000
"""Allocations between collections of the interpreter's youngest generation while loading."""


def _consume(consumer: Any, rows: int, seconds: float) -> list[Any]:
    """Up to ``rows`` records, waiting at most ``seconds`` for them — as one
    ``consume(rows, seconds)``, but taken `CONSUME_CHUNK` at a time. The client holds the GIL
    while it makes a call's message objects: 100k in one call kept the write thread from
    returning from its engine statements for tens of milliseconds at each batch (a 1M-event
    window into DuckDB: 0.4 s of the write thread's statements went to that wait)."""
    messages: list[Any] = []
    deadline = time.monotonic() + seconds
    while len(messages) < rows:
        left = deadline - time.monotonic()
        chunk = consumer.consume(min(rows - len(messages), CONSUME_CHUNK), max(left, 0.0))
        messages += chunk
        if not chunk or left <= 0:
            break
    return messages


class _Tuning:
    """The interpreter settings a running loader needs, set while at least one runs (loaders
    may share a process) and restored when the last one stops.

    - GIL hand-over every 0.5 ms instead of 5 ms (`SWITCH_INTERVAL`). Each engine statement of
      a write ends by taking the GIL back from the reading thread, which holds it in its
      per-record loop: at the default interval the write thread's ~20 statements per batch
      waited up to 5 ms each. A 1M-event window into DuckDB: 140k rows/s against 157k at
      0.5 ms (three runs each; 0.2 ms was no faster).
    - The youngest garbage-collector generation collected every 100k allocations instead of
      700 (`GC_YOUNG`). Every consumed message is a tracked object and a batch holds 100k of
      them, so at the default the collector ran every 700 messages and kept promoting and
      re-scanning the live batch: it took a quarter of the reading thread (py-spy). Cycles are
      still collected, only in larger steps. The same window: 165k rows/s against 222k
      (three runs each; disabling the collector altogether was no faster).
    """

    _lock = threading.Lock()
    _users = 0
    _saved: tuple[float, tuple[int, int, int]] = (0.0, (0, 0, 0))

    @classmethod
    def enter(cls) -> None:
        with cls._lock:
            if cls._users == 0:
                interval, threshold = sys.getswitchinterval(), gc.get_threshold()
                cls._saved = (interval, threshold)
                sys.setswitchinterval(min(interval, SWITCH_INTERVAL))
                gc.set_threshold(max(threshold[0], GC_YOUNG), *threshold[1:])
            cls._users += 1

    @classmethod
    def exit(cls) -> None:
        with cls._lock:
            cls._users -= 1
            if cls._users == 0:
                interval, threshold = cls._saved
                sys.setswitchinterval(interval)
                gc.set_threshold(*threshold)


@contextmanager
def interpreter_tuned() -> Iterator[None]:
    """The interpreter tuned as while a loader runs (`_Tuning`), for code that reads Kafka the
    same way, such as a benchmark's baseline."""
    _Tuning.enter()
    try:
        yield
    finally:
        _Tuning.exit()


class _Writer:
    """Writes batches on one worker thread while the caller reads the next one; with
    ``prepare``, prepares each on another thread while the one before is written.

    Reading is Python (consume, group); writing is mostly the target's engine, which releases
    the GIL, so the stages overlap on two cores. Writes run in order, one at a time, each
    after its batch's preparation; at most one batch waits behind the write in flight
    (two with ``prepare``: the one preparing). `submit` and `wait` return, oldest first, the
    batches whose writes completed (to commit their offsets) and re-raise a write's error;
    after a failed write no later batch is written. Preparing must not fail: an error there
    is logged and the write does the work itself. While one is open the interpreter is tuned
    for it (`_Tuning`).
    """

    def __init__(
        self,
        write: Callable[[LoadBatch], None],
        prepare: Callable[[LoadBatch], None] | None = None,
    ) -> None:
        self._write, self._prepare = write, prepare
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="sluiceway-load")
        self._ready = (
            None if prepare is None else ThreadPoolExecutor(1, thread_name_prefix="sluiceway-prep")
        )
        self._waiting = 1 if prepare is None else 2
        self._pending: deque[tuple[Future[None], LoadBatch]] = deque()
        self._failed = False
        self._closed = False
        _Tuning.enter()

    def _prepared(self, batch: LoadBatch) -> None:
        assert self._prepare is not None
        try:
            self._prepare(batch)
        except Exception:  # the write does what preparing could not, and raises its error
            log.debug("preparing a batch failed; its write stages it", exc_info=True)

    def _written(self, batch: LoadBatch, prepared: Future[None] | None) -> None:
        if prepared is not None:
            prepared.result()
        if self._failed:
            raise SinkFatal("not written: the write of an earlier batch failed")
        try:
            self._write(batch)
        except BaseException:
            self._failed = True
            raise

    def _done(self) -> LoadBatch:
        future, batch = self._pending.popleft()
        future.result()
        return batch

    def wait(self) -> list[LoadBatch]:
        """Wait for every batch submitted; the batches written."""
        return [self._done() for _ in range(len(self._pending))]

    def submit(self, batch: LoadBatch) -> list[LoadBatch]:
        """Queue a batch; the batches whose writes completed meanwhile."""
        prepared = None if self._ready is None else self._ready.submit(self._prepared, batch)
        self._pending.append((self._pool.submit(self._written, batch, prepared), batch))
        return [self._done() for _ in range(len(self._pending) - self._waiting)]

    def close(self) -> None:
        """Wait for the writes in flight (an error, if any, was or will be raised by `wait`)."""
        for future, _ in self._pending:
            future.exception()
        if not self._closed:
            self._closed = True
            self._pool.shutdown(wait=True)
            if self._ready is not None:
                self._ready.shutdown(wait=True)
            _Tuning.exit()


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
        self.tolerant = pipeline.errors.tolerance == "all"
        self._dead_letters: DeadLetters | None = None

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
                **FETCH,
            }
        )

    def _batch(
        self, messages: list[Any], group: str, ends: dict[tuple[str, int], int] | None = None
    ) -> LoadBatch:
        """Group records by topic and table shape, without parsing them; with ``ends``, only
        the records before each partition's end offset.

        The loop runs once per record and bounds a loader's speed, so it does per record only
        what changes per record: the partition's end and stored offset are looked up when
        the partition changes (a consumed batch comes in long runs of one partition), and a
        record's shape — its schema id, found by `_SCHEMA_ID` without parsing — is compared
        as bytes with the previous one, the entry it goes to looked up only when it differs.
        At 100k records of one shape: 1.5M records/s against 0.85M with a lookup per record.
        A record without a schema id is parsed (Connect JSON, or not a change event)."""
        batch = LoadBatch(group)
        tables, offsets = batch.tables, batch.offsets
        raw: dict[tuple[str, str], RawRecords] = {}
        here: tuple[str, int] | None = None  # the partition of the current run
        topic, partition, end, following = "", -1, _NO_END, None
        shape: bytes | None = None  # the previous record's schema id, as bytes
        records = RawRecords(topic)  # replaced before its first use: no shape yet
        add_partition, add_offset = records.partitions.append, records.offsets.append
        add_key, add_value = records.keys.append, records.values.append
        for msg in messages:
            if msg.error() is not None:
                continue
            if msg.partition() != partition or msg.topic() != topic:
                if here is not None and following is not None:
                    offsets[here] = following
                topic, partition = msg.topic(), msg.partition()
                here = (topic, partition)
                following = offsets.get(here)
                end = _NO_END if ends is None else ends.get(here, 0)
                shape = None
            offset = msg.offset()
            if offset >= end:
                continue
            following = offset + 1
            value = msg.value()
            if value is None:  # a tombstone: the delete before it carried the change
                continue
            found: bytes | None = None
            at = value.rfind(_SCHEMA_ID)
            if at >= 0:
                at += len(_SCHEMA_ID)
                close = value.find(b'"', at)
                if close > at:
                    found = value[at:close]
            if found is None or found != shape:
                if found is not None:
                    schema_id = found.decode()
                else:
                    try:
                        change = Change.parse(topic, partition, offset, msg.key(), value)
                    except SinkFatal as exc:
                        reason = str(exc.__cause__ or exc)
                        batch.rejected.append((topic, partition, offset, msg.key(), value, reason))
                        continue
                    if change is None or change.schema_id is None:
                        continue
                    schema_id = change.schema_id
                # One entry per topic and shape, in arrival order: an older shape's rows first.
                entry = raw.get((topic, schema_id))
                if entry is None:
                    schema = self.schemas.get(schema_id)
                    entry = raw[(topic, schema_id)] = RawRecords(topic)
                    tables[(topic, schema_id)] = TableBatch(
                        (schema.schema, schema.table), schema, entry
                    )
                records = entry
                add_partition, add_offset = records.partitions.append, records.offsets.append
                add_key, add_value = records.keys.append, records.values.append
                shape = found
            add_partition(partition)
            add_offset(offset)
            add_key(msg.key())
            add_value(value)
        if here is not None and following is not None:
            offsets[here] = following
        return batch

    def _preparing(self) -> Callable[[LoadBatch], None] | None:
        """The sink's `Sink.prepare` for the writer's preparing thread; None if it has none."""
        if type(self.sink).prepare is Sink.prepare:
            return None
        return lambda batch: self.sink.prepare(batch, self.mode)

    def _write(self, batch: LoadBatch) -> None:
        if not batch.offsets:
            return
        self._apply(batch)
        self.stats.offsets.update(batch.offsets)
        rows = batch.rows()
        self.stats.rows += rows
        self.stats.batches += 1
        self.stats.last_batch_rows = rows

    def _from_archive(
        self,
        consumer: Any,
        archive: ArchiveReader,
        partitions: list[tuple[str, int]],
        start_ms: int,
        end_ms: int,
    ) -> int:
        """Load what the archive holds below each partition's low watermark in the window."""
        loaded = 0
        prefix = self.pipeline.topic_prefix + "."
        for topic, partition in partitions:
            low, _ = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            if low <= 0 or not topic.startswith(prefix):
                continue
            schema, _, table = topic[len(prefix) :].partition(".")
            records = archive.records(schema, table, partition, low, start_ms, end_ms)
            for first in range(0, len(records), self.batch_rows):
                chunk = [
                    _Archived(topic, partition, *r)
                    for r in records[first : first + self.batch_rows]
                ]
                batch = self._batch(chunk, self.group)
                batch.offsets = {}
                if batch.tables:
                    self._apply(batch)
                    loaded += batch.rows()
            log.info(
                "%s[%d]: %d archived records below offset %d", topic, partition, len(records), low
            )
        return loaded

    # --- errors ------------------------------------------------------------------------------
    def dead_letters(self) -> DeadLetters:
        """The dead-letter producer (its topic created on first use)."""
        if self._dead_letters is None:
            topic = self.pipeline.dead_letter_topic
            ensure_topics(kafka_admin(self.settings.kafka), [topic], TopicSettings(), partitions=1)
            self._dead_letters = DeadLetters(self.settings.kafka, topic, self.pipeline.name, "load")
        return self._dead_letters

    def _apply(self, batch: LoadBatch) -> None:
        """Write a batch. With ``errors.tolerance: all``, what the target refuses is isolated
        and dead-lettered and the rest is written: records that are not change events, all
        records of a table whose shape changed incompatibly, and — found by halving the
        table's records — any single record the target refuses (a value it cannot hold).
        Dead letters are flushed before the offsets move past them."""
        if batch.rejected and not self.tolerant:
            topic, partition, offset, _, _, reason = batch.rejected[0]
            raise BadRecords([(topic, partition, offset, reason)])
        try:
            if not batch.rejected:
                self.sink.write(batch, self.mode)
                return
        except SinkFatal:
            if not self.tolerant:
                raise
        letters = self.dead_letters()
        for topic, partition, offset, key, value, reason in batch.rejected:
            error = BadRecords([(topic, partition, offset, reason)])
            letters.send(key, value, error, topic=topic, partition=partition, offset=offset)
        for ref, table in batch.tables.items():
            self._isolate(batch.group, ref, table)
        letters.flush()
        self.sink.write(LoadBatch(batch.group, offsets=batch.offsets), self.mode)
        self.stats.dead_letters = letters.count

    def _isolate(self, group: str, ref: tuple[str, str], table: TableBatch) -> None:
        bad: dict[tuple[int, int], SinkFatal]
        try:
            self.sink.write(LoadBatch(group, {ref: table}), self.mode)
            return
        except BadRecords as exc:
            bad = {(p, o): BadRecords([(t, p, o, why)]) for t, p, o, why in exc.records}
        except IncompatibleChange as exc:
            bad = {(p, o): exc for _, p, o, _, _ in table.records()}
        except SinkFatal as exc:
            records = table.records()
            if len(records) > 1:
                half = len(records) // 2
                self._isolate(group, ref, table.subset(list(range(half))))
                self._isolate(group, ref, table.subset(list(range(half, len(records)))))
                return
            bad = {(p, o): exc for _, p, o, _, _ in records}
        letters = self.dead_letters()
        keep = []
        for index, (topic, partition, offset, key, value) in enumerate(table.records()):
            error = bad.get((partition, offset))
            if error is None:
                keep.append(index)
            else:
                letters.send(key, value, error, topic=topic, partition=partition, offset=offset)
        if keep:
            self._isolate(group, ref, table.subset(keep))

    # --- continuous ------------------------------------------------------------------------
    def run(self) -> None:
        """Load until `stop` is set."""
        consumer = self._consumer(self.group, f"{self.group}.{socket.gethostname()}")
        writer = _Writer(self._write, self._preparing())

        def commit(batches: list[LoadBatch]) -> None:
            offsets = {key: o for batch in batches for key, o in batch.offsets.items()}
            if offsets:
                commits = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
                consumer.commit(offsets=commits, asynchronous=True)

        def on_assign(c: Any, partitions: list[TopicPartition]) -> None:
            commit(writer.wait())  # the stored offsets include the write in flight
            stored = self.sink.stored_offsets(self.group)
            for tp in partitions:
                tp.offset = stored.get((tp.topic, tp.partition), OFFSET_BEGINNING)
                if tp.offset >= 0:  # what the target holds: lag is measured from here
                    self.stats.offsets[(tp.topic, tp.partition)] = tp.offset
            c.assign(partitions)

        def on_revoke(c: Any, partitions: list[TopicPartition]) -> None:
            commit(writer.wait())

        consumer.subscribe([self.pattern], on_assign=on_assign, on_revoke=on_revoke)
        try:
            while not self.stop.is_set():
                messages = _consume(consumer, self.batch_rows, self.batch_seconds)
                if not messages:
                    commit(writer.wait())
                    continue
                commit(writer.submit(self._batch(messages, self.group)))
            commit(writer.wait())
        finally:
            writer.close()
            consumer.close()

    # --- bounded ---------------------------------------------------------------------------
    def load_window(
        self,
        start_ms: int,
        end_ms: int,
        progress: Callable[[int, int], None] | None = None,
        archive: ArchiveReader | None = None,
    ) -> int:
        """Load the events with timestamps in [start_ms, end_ms); returns the rows loaded.
        ``progress(records read, records in the window)`` is called after each batch. With an
        ``archive`` (the pipeline's S3 target), the records Kafka's retention already dropped
        from a partition are read from it first, by commit time."""
        consumer = self._consumer(f"{self.group}.window.{uuid.uuid4().hex[:8]}")
        writer: _Writer | None = None
        try:
            metadata = consumer.list_topics(timeout=10)
            topics = [t for t in metadata.topics if re.match(self.pattern, t)]
            partitions = [(topic, p) for topic in topics for p in metadata.topics[topic].partitions]
            if not partitions:  # no change topic yet (capture has not started): nothing to load
                return 0
            firsts = consumer.offsets_for_times(
                [TopicPartition(t, p, start_ms) for t, p in partitions], timeout=15
            )
            lasts = consumer.offsets_for_times(
                [TopicPartition(t, p, end_ms) for t, p in partitions], timeout=15
            )
            begins: dict[tuple[str, int], int] = {}
            ends: dict[tuple[str, int], int] = {}
            for first, last in zip(firsts, lasts, strict=True):
                high = consumer.get_watermark_offsets(
                    TopicPartition(first.topic, first.partition), timeout=10
                )[1]
                begin = first.offset if first.offset >= 0 else high
                stop = last.offset if last.offset >= 0 else high
                if begin < stop:
                    begins[(first.topic, first.partition)] = begin
                    ends[(first.topic, first.partition)] = stop
            loaded = 0
            if archive is not None:
                loaded += self._from_archive(consumer, archive, partitions, start_ms, end_ms)
            if not ends:
                return loaded
            consumer.assign([TopicPartition(t, p, b) for (t, p), b in begins.items()])
            remaining = set(ends)
            writer = _Writer(self._apply, self._preparing())
            total = sum(ends[key] - begins[key] for key in ends)
            read: dict[tuple[str, int], int] = dict(begins)
            deadline = time.monotonic() + 600
            while remaining:
                if time.monotonic() > deadline:
                    raise SinkFatal(f"window [{start_ms}, {end_ms}) not read in 600 s")
                messages = _consume(consumer, self.batch_rows, self.batch_seconds)
                batch = self._batch(messages, self.group, ends)
                for key, following in batch.offsets.items():
                    read[key] = following
                    if following >= ends[key]:
                        remaining.discard(key)
                if not messages and remaining:
                    # The end offset can be a transaction marker (a transactional topic, like
                    # the enrichment topics): no record comes at it; the position says done.
                    positions = consumer.position([TopicPartition(t, p) for t, p in remaining])
                    for tp in positions:
                        if tp.offset >= ends[(tp.topic, tp.partition)]:
                            remaining.discard((tp.topic, tp.partition))
                if progress is not None:
                    progress(sum(read[k] - begins[k] for k in ends), total)
                batch.offsets = {}  # a window never moves the continuous loader's offsets
                if batch.tables:
                    writer.submit(batch)
                    loaded += batch.rows()
            writer.wait()
            return loaded
        finally:
            if writer is not None:
                writer.close()
            consumer.close()
