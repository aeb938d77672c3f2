"""Log-based capture from PostgreSQL into Kafka: snapshot handoff, streaming, confirmed positions.

`PostgresCapture.run` is the whole life of a pipeline's capture:

1. ensure the publication (and REPLICA IDENTITY FULL if asked) and the change topics;
2. if the slot is new, create it with an exported snapshot and, for ``snapshot: initial``, read
   every table at that snapshot (op 'r') before streaming from the slot's consistent point —
   nothing missed, nothing doubled;
3. stream pgoutput changes, each transaction's events produced to Kafka; the slot's flush
   position is confirmed only up to the end of the last transaction whose events Kafka has all
   acknowledged (`DeliveryTracker`), so after any crash capture resumes at or before the first
   unacknowledged change: duplicates are possible, loss is not;
4. emit heartbeats (pg_logical_emit_message) so the slot advances while tables are idle, and
   watch the WAL the slot retains against the pipeline's budget.

Connection loss to PostgreSQL is retried with backoff; a missing slot or a refused permission
is terminal and says what to do.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extras

from sluiceway.connect import kafka_admin, postgres_connection
from sluiceway.errors import SourceFatal, SourceUnavailable
from sluiceway.pipeline import Pipeline, PostgresSource
from sluiceway.settings import Settings
from streaming.events import ChangeEvent
from streaming.kafka.producer import Batch, DeliveryTracker, EventProducer
from streaming.sources.base import CaptureStats
from streaming.sources.emitter import Emitter, Framing
from streaming.sources.postgres import pgoutput as pg
from streaming.sources.postgres.catalog import (
    SlotHealth,
    TableInfo,
    ensure_publication,
    load_types,
    slot_health,
    table_info,
)
from streaming.sources.postgres.changes import TableCodec
from streaming.sources.postgres.pgtypes import SESSION_SETTINGS, TypeRegistry
from streaming.sources.postgres.snapshot import JsonRows, SnapshotReader
from streaming.sources.postgres.state import CaptureState
from streaming.sources.postgres.stream import TransactionStream
from streaming.sources.retry import run_with_retries

__all__ = ["CaptureStats", "PostgresCapture"]

log = logging.getLogger(__name__)

HEARTBEAT_PREFIX = "sluiceway.heartbeat"
_OPTIONS = " ".join(f"-c {k}={v.replace(' ', '')}" for k, v in SESSION_SETTINGS.items())


class PostgresCapture:
    """Captures one pipeline's PostgreSQL tables into Kafka until `stop` is set."""

    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        *,
        on_stats: Callable[[CaptureStats], None] | None = None,
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        if not isinstance(pipeline.source, PostgresSource):
            raise TypeError("PostgresCapture needs a pipeline with source kind postgres")
        self.source: PostgresSource = pipeline.source
        self.database = self.source.database or settings.postgres.database
        self.stop = threading.Event()
        self.stats = CaptureStats()
        self._on_stats = on_stats
        self._codecs: dict[int, TableCodec] = {}
        self._tables: dict[int, TableInfo] = {}
        self._topics: set[str] = set()
        self._types: TypeRegistry | None = None
        self._admin: Any = None
        self.error: BaseException | None = None  # why `run` ended, if it failed
        self._state_path = CaptureState.path(settings.state_dir, pipeline.name)
        self.state: CaptureState | None = None
        self._producer: EventProducer | None = None
        self.emitter = Emitter(
            settings, pipeline, None, lambda source: pg.format_lsn(int(source.get("lsn") or 0))
        )

    # --- connections -----------------------------------------------------------------------
    def connect(self) -> Any:
        """A regular connection with the session settings capture relies on."""
        try:
            return postgres_connection(
                self.settings.postgres, database=self.database, options=_OPTIONS
            )
        except psycopg2.OperationalError as exc:
            raise SourceUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc

    def _replication(self) -> Any:
        try:
            return postgres_connection(
                self.settings.postgres,
                database=self.database,
                options=_OPTIONS,
                connection_factory=psycopg2.extras.LogicalReplicationConnection,
            )
        except psycopg2.OperationalError as exc:
            raise SourceUnavailable(f"cannot open a replication connection: {exc}") from exc

    # --- the run ---------------------------------------------------------------------------
    def run(self) -> None:
        """Capture until `stop` is set, retrying transient failures with backoff."""
        try:
            self._run_with_retries()
        except BaseException as exc:
            self.error = exc
            self.stats.phase = "failed"
            raise

    def _run_with_retries(self) -> None:
        run_with_retries(self.stop, self._run_once, f"capture of {self.pipeline.name}")

    def _run_once(self) -> None:
        catalog = self.connect()
        tracker = DeliveryTracker()
        producer = EventProducer(self.settings.kafka, tracker)
        self._producer = producer
        self.emitter.attach(producer)
        repl = None
        try:
            self._prepare(catalog)
            repl = self._replication()
            cur = repl.cursor()
            start_lsn = 0
            state = CaptureState.load(self._state_path)
            if state is None or state.slot != self.pipeline.slot:
                state = CaptureState(self.pipeline.slot, snapshot_done=True)
            self.state = state
            health = slot_health(catalog, self.pipeline.slot)
            if health is None:
                start_lsn = self._create_slot(cur, producer)
            elif not state.snapshot_done:
                self._resume_snapshot(state, producer)
            self._stream(cur, catalog, producer, tracker, start_lsn)
        except psycopg2.errors.UndefinedObject as exc:
            raise SourceFatal(
                f"{exc}".strip() + f"; the slot {self.pipeline.slot} or publication "
                f"{self.pipeline.publication} is gone: restart capture to recreate (and snapshot)"
            ) from exc
        except psycopg2.errors.InsufficientPrivilege as exc:
            raise SourceFatal(
                f"{exc}".strip() + f"; grant {self.settings.postgres.user} REPLICATION and "
                "ownership of (or SELECT on) the captured tables"
            ) from exc
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            raise SourceUnavailable(f"PostgreSQL connection lost: {exc}") from exc
        finally:
            # Whatever happened, wait for Kafka: positions are confirmed in the next run from
            # what the slot holds, so in-flight events are at worst sent twice.
            producer.flush(60)
            if repl is not None:
                repl.close()
            catalog.close()

    def _prepare(self, catalog: Any) -> None:
        tables = ensure_publication(
            catalog,
            self.pipeline.publication,
            self.source.tables,
            replica_identity_full=self.source.replica_identity_full,
        )
        self._tables = {t.oid: t for t in tables}
        self._types = TypeRegistry(lambda oids: load_types(catalog, oids))
        self._types.load(load_types(catalog))
        catalog.commit()
        self._admin = self.emitter.admin = kafka_admin(self.settings.kafka)
        self._ensure_topics([])  # the schema topic first: codecs publish into it
        names = [self._codec_for_table(catalog, t).topic for t in tables]
        self._ensure_topics(names)

    @property
    def schema_topic(self) -> str:
        """Where table shapes are published (compacted, keyed by schema id)."""
        return self.emitter.schema_topic

    def _ensure_topics(self, names: list[str]) -> None:
        if self.pipeline.topics.transaction_topic:
            names = [*names, f"{self.pipeline.topic_prefix}.transaction"]
        self.emitter.ensure_topics(names)

    def _publish_schema(self, codec: TableCodec) -> None:
        # Before any event that names it; loaders wait for a schema id they have not seen.
        self.emitter.publish(codec.table_schema)

    def _codec_for_table(self, catalog: Any, table: TableInfo) -> TableCodec:
        with catalog.cursor() as cur:
            cur.execute(
                "SELECT attname, atttypid, atttypmod FROM pg_attribute WHERE attrelid = %s "
                "AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                (table.oid,),
            )
            columns = [pg.Column(r[0], int(r[1]), int(r[2]), r[0] in table.key) for r in cur]
        catalog.commit()
        assert self._types is not None
        codec = TableCodec(
            self.pipeline,
            self.database,
            table.schema,
            table.name,
            columns,
            table.key,
            self._types,
            table.oid,
        )
        self._codecs[table.oid] = codec
        self._publish_schema(codec)
        return codec

    # --- snapshot --------------------------------------------------------------------------
    def _create_slot(self, cur: Any, producer: EventProducer) -> int:
        cur.execute(
            f"CREATE_REPLICATION_SLOT {self.pipeline.slot} LOGICAL pgoutput (SNAPSHOT 'export')"
        )
        _slot, consistent_point, snapshot_name, _plugin = cur.fetchone()
        lsn = pg.parse_lsn(consistent_point)
        log.info("created slot %s at %s", self.pipeline.slot, consistent_point)
        self.state = CaptureState(self.pipeline.slot, lsn, snapshot_done=False)
        self.state.save(self._state_path)
        if self.source.snapshot == "initial":
            self._snapshot(snapshot_name, lsn, producer)
        self.state.snapshot_done = True
        self.state.save(self._state_path)
        return lsn

    def _resume_snapshot(self, state: CaptureState, producer: EventProducer) -> None:
        # The initial snapshot was interrupted. Its exported snapshot is gone, but the slot
        # still stands at the consistent point (nothing was confirmed past it). Read the tables
        # again at a fresh snapshot, stamped with that position, then stream from the slot:
        # every change since the consistent point is replayed after these rows, so each key
        # ends at its true state, deletes included.
        log.warning("the initial snapshot of %s was interrupted: reading it again", state.slot)
        exporter = self.connect()
        try:
            with exporter.cursor() as cur:
                cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                cur.execute("SELECT pg_export_snapshot()")
                (snapshot_name,) = cur.fetchone()
            self._snapshot(snapshot_name, state.consistent_point, producer)
        finally:
            exporter.rollback()
            exporter.close()
        state.snapshot_done = True
        state.save(self._state_path)

    def _snapshot(self, snapshot_name: str, lsn: int, producer: EventProducer) -> None:
        tables = list(self._tables.values())
        columns = {oid: codec.names for oid, codec in self._codecs.items()}
        now = int(time.time() * 1000)
        sources = {
            oid: codec.source(now, "true", None, lsn, lsn) for oid, codec in self._codecs.items()
        }
        framings = self._framings(sources, now)
        assert self._types is not None
        in_server = {
            oid: [t for t in map(self._types.json_in_server, self._codecs[oid].type_oids) if t]
            for oid in framings
        }
        reader = SnapshotReader(
            self.connect,
            snapshot_name,
            tables,
            columns,
            workers=self.source.snapshot_workers,
            chunk_rows=self.source.snapshot_chunk_rows,
            in_server=in_server,
        )
        self.stats.phase = "snapshot"
        self.stats.snapshot_estimate = reader.estimated_rows
        # The rows go through a producer of their own that reports only failures: they are
        # awaited as a whole by its flush below, before streaming starts on the main producer
        # (so each partition holds the snapshot before any streamed change).
        bulk = EventProducer(self.settings.kafka, DeliveryTracker(), each_delivery=False)
        self.emitter.attach(bulk)
        batch = bulk.tracker.open()
        as_connect = self.pipeline.topics.format == "connect-json"

        def on_row(table: TableInfo, _columns: list[str], values: list[pg.Value]) -> None:
            codec = self._codecs[table.oid]
            event = codec.event("r", None, values, sources[table.oid], now)
            self._send(bulk, batch, codec, event, as_connect)

        def on_json(table: TableInfo, rows: JsonRows) -> None:
            framing = framings[table.oid]
            bulk.send_all(framing.topic, framing.messages(rows))

        def on_progress(rows: int) -> None:
            self.stats.snapshot_rows = rows
            bulk.serve()
            self._report()

        try:
            rows = reader.run(on_row, on_progress, on_json)
            if bulk.flush(300) > 0:
                raise SourceUnavailable("Kafka did not acknowledge the snapshot in 300s")
        finally:
            self.emitter.attach(producer)
        encoded = reader.rows_encoded_in_server
        self.stats.events += encoded
        self.emitter.events += encoded
        self.stats.snapshot_rows = rows
        self.stats.snapshot_encoded_in_server = encoded
        log.info("snapshot of %d rows done (%d encoded by PostgreSQL)", rows, encoded)

    def _framings(self, sources: dict[int, dict[str, Any]], now: int) -> dict[int, Framing]:
        """The tables PostgreSQL encodes in the snapshot, with their envelopes' bytes: every
        column of a type `pgtypes.JSON_IN_SERVER` covers, no transforms, and the setting on."""
        found: dict[int, Framing] = {}
        if self.source.snapshot_encoding != "server":
            return found
        assert self._types is not None
        for oid, codec in self._codecs.items():
            if not all(self._types.json_in_server(t) for t in codec.type_oids):
                continue
            event = ChangeEvent(codec.topic, None, "r", None, None, sources[oid], now)
            framing = self.emitter.framing(event, codec.table_schema, codec.key, codec.connect)
            if framing is not None:
                found[oid] = framing
        return found

    # --- streaming -------------------------------------------------------------------------
    def _send(
        self,
        producer: EventProducer,
        batch: Batch,
        codec: TableCodec,
        event: ChangeEvent,
        as_connect: bool,
    ) -> None:
        # Transforms, serialisation, tombstones and dead letters: the emitter, as every source.
        self.emitter.send(batch, event, codec.table_schema, codec.connect)
        self.stats.events += 1

    def _stream(
        self,
        cur: Any,
        catalog: Any,
        producer: EventProducer,
        tracker: DeliveryTracker,
        start_lsn: int,
    ) -> None:
        catalog.autocommit = True
        cur.start_replication(
            slot_name=self.pipeline.slot,
            decode=False,
            start_lsn=start_lsn,
            options={
                "proto_version": "1",
                "publication_names": self.pipeline.publication,
                "messages": "true",
            },
            # psycopg2's own keepalive replies (it needs >= 1 s); positions are sent below.
            status_interval=max(1, int(self.source.status_seconds)),
        )
        self.stats.phase = "streaming"
        log.info("streaming from slot %s", self.pipeline.slot)
        state = TransactionStream(self, catalog, producer, tracker)
        next_status = next_heartbeat = next_health = time.monotonic()
        while not self.stop.is_set():
            message = cur.read_message()
            if message is not None:
                state.handle(message.payload, message.data_start)
                # Housekeeping every 2000 messages, or at once when an incremental snapshot
                # can start its next chunk (progress is None in the common case: one test).
                incremental = state.incremental
                if state.handled % 2000 and (
                    incremental.progress is None or not incremental.ready()
                ):
                    continue
            else:
                select.select([cur], [], [], 0.2)
            now = time.monotonic()
            producer.serve()
            state.incremental.tick()
            self.stats.incremental_rows = state.incremental.rows_emitted
            if now >= next_status:
                confirmed = tracker.confirmed()
                if confirmed > self.stats.confirmed_lsn:
                    cur.send_feedback(flush_lsn=confirmed)
                    self.stats.confirmed_lsn = confirmed
                    self._persist_incremental(
                        state.incremental.confirmed(confirmed), state.incremental.completed
                    )
                next_status = now + self.source.status_seconds
                self._report()
            if now >= next_heartbeat:
                with catalog.cursor() as hb:
                    hb.execute("SELECT pg_logical_emit_message(true, %s, '')", (HEARTBEAT_PREFIX,))
                next_heartbeat = now + self.source.heartbeat_seconds
            if now >= next_health:
                self._check_wal(slot_health(catalog, self.pipeline.slot))
                next_health = now + 10.0
        # Graceful stop: wait for Kafka, then confirm everything it acknowledged.
        producer.flush(60)
        confirmed = tracker.confirmed()
        cur.send_feedback(flush_lsn=confirmed, force=True)
        self.stats.confirmed_lsn = confirmed
        self._persist_incremental(
            state.incremental.confirmed(confirmed), state.incremental.completed
        )
        self.stats.phase = "stopped"
        self._report()

    def _persist_incremental(
        self, progress: dict[str, Any] | bool | None, completed: list[str]
    ) -> None:
        # Incremental snapshot progress reaches the file only once Kafka confirmed its chunk.
        if progress is False or self.state is None:
            return
        self.state.completed = [
            *self.state.completed,
            *(i for i in completed if i not in self.state.completed),
        ][-20:]
        completed.clear()
        self.state.incremental = progress  # type: ignore[assignment]
        self.state.save(self._state_path)

    def _check_wal(self, health: SlotHealth | None) -> None:
        if health is None:
            return
        self.stats.retained_wal_bytes = health.retained_bytes
        budget = self.source.wal_budget_mb * 1024 * 1024
        if health.retained_bytes > budget:
            log.warning(
                "slot %s retains %d MiB of WAL, over the budget of %d MiB",
                self.pipeline.slot,
                health.retained_bytes // 2**20,
                self.source.wal_budget_mb,
            )

    def _report(self) -> None:
        self.stats.dead_letters = self.emitter.dead_letters
        if self._on_stats is not None:
            self._on_stats(self.stats)

    def relation(self, catalog: Any, message: pg.Relation) -> TableCodec:
        """A (new or changed) table shape from a Relation message."""
        table = self._tables.get(message.oid) or table_info(catalog, message.oid)
        if table is None:
            table = TableInfo(message.oid, message.namespace, message.name, (), 0)
        self._tables[message.oid] = table
        assert self._types is not None
        codec = TableCodec(
            self.pipeline,
            self.database,
            message.namespace,
            message.name,
            message.columns,
            table.key,
            self._types,
            message.oid,
        )
        self._codecs[message.oid] = codec
        self._ensure_topics([codec.topic])
        self._publish_schema(codec)
        return codec
