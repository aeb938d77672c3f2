"""From a source's change event to Kafka: transforms, serialisation, shapes, dead letters.

Every source (PostgreSQL pgoutput, the MySQL/MariaDB binlog, query polling) hands its events
to one `Emitter`, so they all behave alike downstream:

- the pipeline's capture-time transforms run first (`streaming.transforms`), and the table
  shape they produce is published to ``<prefix>.schemas`` before the first event naming it;
- the event is serialised as plain JSON or Kafka Connect's JsonConverter form, produced with
  its headers, and (for compacted topics) a delete is followed by a tombstone;
- a record that fails (decode, transform, serialize) never disappears: with
  ``errors.tolerance: all`` it goes to the dead-letter topic with the pipeline, stage, table,
  source position and error in Kafka Connect's header names — and Kafka holds it before the
  source position moves past it; with ``none`` capture stops with `RecordFailed` saying the same.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import orjson

from sluiceway.errors import RecordFailed
from sluiceway.pipeline import Pipeline
from sluiceway.settings import Settings
from streaming.events import ChangeEvent, ConnectSchema, TableSchema, encode_json
from streaming.kafka.deadletter import DeadLetters
from streaming.kafka.producer import Batch, EventProducer
from streaming.kafka.topics import ensure_topics
from streaming.sources.values import connect_schema
from streaming.transforms import Record, TransformChain, TransformError

__all__ = ["Emitter", "Framing"]

log = logging.getLogger(__name__)


_MARK = "__sluiceway_encoded_by_the_source__"


@dataclass(frozen=True, slots=True)
class Framing:
    """The bytes around a key and an ``after`` row that the source encoded itself (PostgreSQL's
    snapshot): ``key_prefix + key + key_suffix`` and ``prefix + after + suffix`` are exactly
    what `Emitter.send` writes for the same event."""

    topic: str
    key_prefix: bytes
    key_suffix: bytes
    prefix: bytes
    suffix: bytes

    def key(self, encoded: bytes | None) -> bytes | None:
        """The message key around an encoded key struct."""
        if encoded is None:
            return None
        return self.key_prefix + encoded + self.key_suffix if self.key_prefix else encoded

    def messages(self, rows: list[tuple[bytes | None, bytes]]) -> list[tuple[bytes | None, bytes]]:
        """(key, value) messages around encoded (key, after) rows, as `key` frames each."""
        prefix, suffix = self.prefix, self.suffix
        if not self.key_prefix:  # the keys as they are: no call per row on a snapshot's path
            return [(k, prefix + row + suffix) for k, row in rows]
        key = self.key
        return [(key(k), prefix + row + suffix) for k, row in rows]


def _split(encoded: bytes) -> tuple[bytes, bytes]:
    prefix, mark, suffix = encoded.partition(orjson.dumps(_MARK))
    if not mark or _MARK.encode() in suffix:
        raise ValueError("the envelope must hold the encoded part exactly once")
    return prefix, suffix


class Emitter:
    """Sends one pipeline's change events through its transforms into Kafka."""

    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        admin: Any,
        describe: Callable[[dict[str, Any]], str] | None = None,
    ) -> None:
        """``describe`` renders an event's ``source`` block as the position people read
        (an LSN, ``file:pos``), only when a record fails: never on the hot path."""
        self.settings = settings
        self.describe = describe or (lambda source: str(source.get("lsn")))
        self.pipeline = pipeline
        self.admin = admin
        self.chain = TransformChain(pipeline)
        self.as_connect = pipeline.topics.format == "connect-json"
        self.tombstones = pipeline.topics.emit_tombstones()
        self.producer: EventProducer | None = None
        self.events = 0
        self.dead_letters = 0
        self.filtered = 0
        self._dlq: DeadLetters | None = None
        self._published: set[str] = set()
        self._topics: set[str] = set()
        self._connect: dict[str, ConnectSchema] = {}

    @property
    def schema_topic(self) -> str:
        """Where table shapes are published (compacted, keyed by schema id)."""
        return f"{self.pipeline.topic_prefix}.schemas"

    def attach(self, producer: EventProducer) -> None:
        """Use this producer (a new one per connection attempt); shapes are published again."""
        self.producer = producer
        self._published = set()

    # --- topics and shapes ------------------------------------------------------------------
    def ensure_topics(self, names: list[str]) -> None:
        """Create the schema topic and these change topics if missing (cached)."""
        if self.schema_topic not in self._topics:
            compacted = self.pipeline.topics.model_copy(
                update={"cleanup_policy": "compact", "retention_ms": -1}
            )
            ensure_topics(self.admin, [self.schema_topic], compacted, partitions=1)
            self._topics.add(self.schema_topic)
        wanted = [n for n in names if n not in self._topics]
        if wanted:
            ensure_topics(self.admin, wanted, self.pipeline.topics)
            self._topics.update(wanted)

    def publish(self, shape: TableSchema) -> str:
        """Publish the shape events of this table will have (after transforms); its id."""
        output = self.chain.plan(shape).output if self.chain else shape
        if self.producer is not None and output.id not in self._published:
            tracker = self.producer.tracker
            batch = tracker.open()
            self.producer.send(
                batch,
                self.schema_topic,
                encode_json({"id": output.id}),
                encode_json(output.to_json()),
            )
            tracker.seal(batch, 0)
            self._published.add(output.id)
        return output.id

    # --- events -----------------------------------------------------------------------------
    def framing(
        self,
        event: ChangeEvent,
        shape: TableSchema,
        key_columns: tuple[str, ...],
        connect: ConnectSchema | None = None,
    ) -> Framing | None:
        """How to frame this table's events when the source encodes ``after`` and the key
        (``key_columns``, in key order) itself; ``event`` is one of them, its ``after`` and key
        left out. None when transforms
        run, as they need every event as values. The shape is published first, as by `send`."""
        if self.chain:
            return None
        if shape.id not in self._published:
            self.publish(shape)
        if event.topic not in self._topics:
            self.ensure_topics([event.topic])
        value: dict[str, Any] = replace(event, after=_MARK).value()  # type: ignore[arg-type]
        key: Any = _MARK
        if self.as_connect:
            connect = connect or self._connect_of(shape)
            value = {"schema": connect.value_schema, "payload": value}
            key = {"schema": connect.key_schema(key_columns), "payload": _MARK}
        prefix, suffix = _split(encode_json(value))
        key_prefix, key_suffix = _split(encode_json(key))
        return Framing(event.topic, key_prefix, key_suffix, prefix, suffix)

    def send(
        self,
        batch: Batch,
        event: ChangeEvent,
        shape: TableSchema,
        connect: ConnectSchema | None = None,
    ) -> None:
        """Transform, serialise and produce one event (or dead-letter it)."""
        assert self.producer is not None
        headers: list[tuple[str, bytes]] | None = None
        topic, key = event.topic, event.key
        value: dict[str, Any] | None = event.value()
        wrap = self.as_connect
        if self.chain:
            plan = self.chain.plan(shape)
            self.publish(shape)
            record = Record(topic, key, value, shape.schema, shape.table)
            try:
                result = plan.apply(record)
            except TransformError as exc:
                self.fail(exc, "transform", event, shape)
                return
            if result is None:
                self.filtered += 1
                return
            topic, key, value, headers = result.topic, result.key, result.value, result.headers
            wrap = wrap and not plan.flattens  # flattened rows are plain JSON
            connect = self._connect_of(plan.output) if wrap else None
        elif shape.id not in self._published:
            self.publish(shape)
        if wrap and value is not None:
            connect = connect or self._connect_of(shape)
            value = {"schema": connect.value_schema, "payload": value}
            if key is not None:
                key = {"schema": connect.key_schema(tuple(key)), "payload": key}
        try:
            encoded_key = encode_json(key) if key is not None else None
            encoded = encode_json(value) if value is not None else None
        except (TypeError, orjson.JSONEncodeError) as exc:
            self.fail(exc, "serialize", event, shape)
            return
        if topic not in self._topics:
            self.ensure_topics([topic])
        self.producer.send(batch, topic, encoded_key, encoded, headers)
        self.events += 1
        if event.op == "d" and self.tombstones and encoded_key is not None and encoded is not None:
            self.producer.send(batch, topic, encoded_key, None, headers)

    def _connect_of(self, shape: TableSchema) -> ConnectSchema:
        found = self._connect.get(shape.id)
        if found is None:
            found = connect_schema(self.pipeline.topic_prefix, shape)
            self._connect[shape.id] = found
        return found

    def fail(
        self,
        error: BaseException,
        stage: str,
        event: ChangeEvent | None,
        shape: TableSchema,
        raw: dict[str, Any] | None = None,
    ) -> None:
        """A record that cannot become an event: to the dead-letter topic, or stop.

        Raises:
            RecordFailed: with ``errors.tolerance: none`` (the default).
        """
        table = f"{shape.schema}.{shape.table}"
        source = event.source if event is not None else (raw or {}).get("source") or {}
        position = self.describe(source)
        where = f"pipeline {self.pipeline.name}, stage {stage}, table {table}, position {position}"
        if self.pipeline.errors.tolerance == "none":
            raise RecordFailed(
                f"{where}: {type(error).__name__}: {error} (errors.tolerance: all would send "
                f"it to {self.pipeline.dead_letter_topic} and go on)"
            ) from error
        if self._dlq is None:
            self._dlq = DeadLetters(
                self.settings.kafka,
                self.pipeline.dead_letter_topic,
                self.pipeline.name,
                "capture",
            )
            self.ensure_topics([self.pipeline.dead_letter_topic])
        payload = raw if event is None else event.value()
        key = event.key if event is not None else None
        self._dlq.stage = stage
        self._dlq.send(
            _best_effort(key) if key is not None else None,
            _best_effort(payload),
            error,
            topic=event.topic if event is not None else "",
            context={"source.position": position, "source.table": table},
        )
        # Kafka holds it before the source position can move past it.
        self._dlq.flush()
        self.dead_letters += 1
        log.warning("dead-lettered a record (%s): %s: %s", where, type(error).__name__, error)


def _best_effort(value: Any) -> bytes:
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)
