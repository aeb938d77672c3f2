"""One source transaction at a time: what each pgoutput message does on its way to Kafka.

`PostgresCapture` reads the replication stream and hands every message to a
`TransactionStream`: Begin opens a delivery batch, row changes become events in it, Commit
seals it with the transaction's end position (confirmed once Kafka acknowledged the batch),
Relation messages rebuild a table's codec, and logical messages drive heartbeats and the
incremental snapshot's watermarks and signals.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from sluiceway.errors import SourceFatal
from streaming.events import ChangeEvent, encode_json
from streaming.kafka.producer import Batch, DeliveryTracker, EventProducer
from streaming.sources.postgres import pgoutput as pg
from streaming.sources.postgres.catalog import load_types
from streaming.sources.postgres.changes import TableCodec
from streaming.sources.postgres.incremental import (
    SIGNAL_PREFIX,
    WATERMARK_PREFIX,
    IncrementalSnapshot,
)

if TYPE_CHECKING:
    from streaming.sources.postgres.capture import PostgresCapture

__all__ = ["TransactionStream"]

PG_EPOCH_MS = 946_684_800_000  # 2000-01-01 in Unix milliseconds
_ROW_TAGS = frozenset(b"IUD")


class TransactionStream:
    """The transaction being decoded, and what each pgoutput message does to it."""

    def __init__(
        self,
        capture: PostgresCapture,
        catalog: Any,
        producer: EventProducer,
        tracker: DeliveryTracker,
    ) -> None:
        self.capture = capture
        self.catalog = catalog
        self.producer = producer
        self.tracker = tracker
        self.handled = 0
        self.batch: Batch | None = None
        self.begin: pg.Begin | None = None
        self.now_ms = 0
        self.commit_ms = 0
        self.order = 0
        self.templates: dict[TableCodec, dict[str, Any]] = {}
        self.as_connect = capture.pipeline.topics.format == "connect-json"
        self.transactions = capture.pipeline.topics.transaction_topic
        progress = capture.state.incremental if capture.state else None
        self.incremental = IncrementalSnapshot(capture, catalog, progress)

    def handle(self, payload: bytes, lsn: int) -> None:
        """Act on one pgoutput message that starts at ``lsn``.

        Raises:
            SourceFatal: the message does not follow the protocol (nothing after it is
                confirmed, so restarting after a fix loses nothing).
        """
        self.handled += 1
        try:
            if payload[0] in _ROW_TAGS:  # the hot path: no message objects for row changes
                self._change(payload, lsn)
                return
            message = pg.decode(payload)
        except pg.PgOutputError as exc:
            raise SourceFatal(
                f"undecodable pgoutput message at LSN {pg.format_lsn(lsn)}: {exc}"
            ) from exc
        if isinstance(message, pg.Begin):
            self.begin = message
            self.batch = self.tracker.open()
            self.now_ms = int(time.time() * 1000)
            self.commit_ms = message.commit_ts_us // 1000 + PG_EPOCH_MS
            self.order = 0
            self.templates.clear()
        elif isinstance(message, pg.Commit):
            assert self.batch is not None
            if self.transactions and self.order:
                self._transaction_marker("END")
            self.incremental.seal(message.end_lsn)
            self.tracker.seal(self.batch, message.end_lsn)
            self.capture.stats.transactions += 1
            self.capture.stats.last_commit_ms = self.commit_ms
            self.batch = None
        elif isinstance(message, pg.LogicalMessage):
            if message.prefix == WATERMARK_PREFIX:
                self.incremental.on_watermark(message.content, message.lsn, self._snapshot_row)
            elif message.prefix == SIGNAL_PREFIX:
                self.incremental.on_signal(message.content)
        elif isinstance(message, pg.Relation):
            self.capture.relation(self.catalog, message)
        elif isinstance(message, pg.Truncate):
            for oid in message.relation_oids:
                self._truncate(oid, lsn)
        elif isinstance(message, pg.TypeInfo):
            assert self.capture._types is not None
            self.capture._types.load(load_types(self.catalog, [message.oid]))

    def _source(self, codec: TableCodec, lsn: int, snapshot: str = "false") -> dict[str, Any]:
        assert self.begin is not None
        if snapshot != "false":
            return codec.source(self.commit_ms, snapshot, self.begin.xid, lsn, self.begin.final_lsn)
        # One template per table per transaction: only the change's LSN differs per row.
        template = self.templates.get(codec)
        if template is None:
            template = self.templates[codec] = codec.source_template(
                self.commit_ms, snapshot, self.begin.xid, self.begin.final_lsn
            )
        return {**template, "lsn": lsn}

    def _snapshot_row(self, codec: TableCodec, values: list[pg.Value], lsn: int) -> None:
        # A row of an incremental snapshot chunk, emitted in the high watermark's transaction.
        source = self._source(codec, lsn, "incremental")
        self._emit(codec, codec.event("r", None, values, source, self.now_ms))

    def _emit(self, codec: TableCodec, event: ChangeEvent) -> None:
        assert self.batch is not None and self.begin is not None
        if self.incremental.chunk is not None and event.source["snapshot"] == "false":
            self.incremental.discard(codec.oid, event.key)
        if self.transactions and self.order == 0:
            self._transaction_marker("BEGIN")
        self.order += 1
        if self.transactions:
            event.transaction = {
                "id": f"{self.begin.xid}:{self.begin.final_lsn}",
                "total_order": self.order,
                "data_collection_order": self.order,
            }
        self.capture._send(self.producer, self.batch, codec, event, self.as_connect)

    def _change(self, payload: bytes, lsn: int) -> None:
        op, oid, old, new = pg.row_values(payload)
        codec = self.capture._codecs[oid]
        source = self._source(codec, lsn)
        if op == "c":
            self._emit(codec, codec.event("c", None, new, source, self.now_ms))
        elif op == "d":
            self._emit(codec, codec.event("d", old, None, source, self.now_ms))
        else:
            event = codec.event("u", old, new, source, self.now_ms)
            old_key = codec.key_of(event.before) if event.before is not None else None
            if old_key is not None:
                self.incremental.discard(oid, old_key)
            if old_key is not None and old_key != event.key:
                # The primary key changed: a delete of the old key and a create of the new one,
                # as Debezium emits, so consumers keyed by primary key drop the old row.
                self._emit(codec, codec.event("d", old, None, source, self.now_ms))
                event.op = "c"
                event.before = None
            self._emit(codec, event)

    def _truncate(self, oid: int, lsn: int) -> None:
        codec = self.capture._codecs.get(oid)
        if codec is None:
            return
        event = ChangeEvent(
            codec.topic, None, "t", None, None, self._source(codec, lsn), self.now_ms
        )
        self._emit(codec, event)

    def _transaction_marker(self, status: str) -> None:
        # Debezium's transaction metadata: BEGIN before a transaction's first event, END with
        # its event count after the last (transactions without events, e.g. heartbeats, skip).
        assert self.begin is not None and self.batch is not None
        topic = f"{self.capture.pipeline.topic_prefix}.transaction"
        txid = f"{self.begin.xid}:{self.begin.final_lsn}"
        value: dict[str, Any] = {"status": status, "id": txid, "ts_ms": self.commit_ms}
        if status == "END":
            value["event_count"] = self.order
        self.producer.send(self.batch, topic, encode_json({"id": txid}), encode_json(value))
