"""Incremental re-snapshots on a live pipeline: DBLog watermarks, no locks, no pause.

The algorithm of Netflix's DBLog, which Debezium's incremental snapshots implement. A request
(`request_snapshot`) is a logical message in the log, so capture sees it in commit order.
Then, chunk by chunk in primary-key order, while streaming goes on:

1. write a low watermark into the log (``pg_logical_emit_message``);
2. read the next ``chunk_rows`` rows after the last key into a buffer;
3. write a high watermark;
4. as the stream passes from the low to the high watermark, every change to a buffered key
   removes that key from the buffer — the log's newer version wins;
5. at the high watermark, the rows left in the buffer are emitted as op 'r' events (in the
   high watermark's transaction, so they are confirmed like any change).

Progress (the last key of the last chunk whose events Kafka acknowledged) is kept in the
capture state file, so after a crash the snapshot resumes from the last finished chunk; rows
of an unconfirmed chunk are read again (at least once, never lost). Watermarks of a chunk from
before a crash carry another id and are ignored.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from psycopg2 import sql

from streaming.events import encode_json
from streaming.sources.postgres import pgoutput as pg
from streaming.sources.postgres.snapshot import copy_rows

if TYPE_CHECKING:
    from streaming.sources.postgres.capture import PostgresCapture

__all__ = ["SIGNAL_PREFIX", "WATERMARK_PREFIX", "IncrementalSnapshot", "request_snapshot"]

log = logging.getLogger(__name__)

SIGNAL_PREFIX = "sluiceway.signal"
WATERMARK_PREFIX = "sluiceway.watermark"


def request_snapshot(conn: Any, tables: list[str]) -> str:
    """Ask the running capture of this database to re-snapshot ``tables`` ('schema.table').

    Returns the request id. The request travels through the log, so it is acted upon in
    order, and survives a restart of capture until capture confirms past it.
    """
    request = str(uuid.uuid4())
    payload = orjson.dumps({"type": "snapshot", "id": request, "tables": tables}).decode()
    with conn.cursor() as cur:
        cur.execute("SELECT pg_logical_emit_message(true, %s, %s)", (SIGNAL_PREFIX, payload))
    conn.commit()
    return request


@dataclass
class _Chunk:
    id: str
    oid: int
    rows: dict[bytes, list[pg.Value]] = field(default_factory=dict)
    read: int = 0
    last_key: list[pg.Value] | None = None
    window_open: bool = False


class IncrementalSnapshot:
    """The incremental snapshot state machine, driven by the capture's stream loop.

    ``progress`` is what is under way in memory: ``{"id", "tables": [...], "last_key"}`` or
    None. Every change to it happens inside a source transaction (the request's, or a high
    watermark's) and is written to the state file only once Kafka confirmed that transaction.
    """

    def __init__(self, capture: PostgresCapture, catalog: Any, progress: dict[str, Any] | None):
        self.capture = capture
        self.catalog = catalog
        self.progress = progress
        self.chunk: _Chunk | None = None
        self.rows_emitted = 0
        self._unsealed: list[tuple[dict[str, Any] | None, list[str]]] = []
        self._pending: list[tuple[int, dict[str, Any] | None, list[str]]] = []
        self.completed: list[str] = []  # requests finished and confirmed in Kafka

    def _changed(self, progress: dict[str, Any] | None, finished: list[str] | None = None) -> None:
        self.progress = progress
        self._unsealed.append((progress, finished or []))

    def on_signal(self, content: bytes) -> None:
        """A snapshot request from the log."""
        request = orjson.loads(content)
        if request.get("type") != "snapshot":
            log.warning("ignoring unknown signal %r", request)
            return
        current = self.progress
        if current is not None and request["id"] in current.get("requests", [current["id"]]):
            return  # replayed after a restart: already under way
        tables = [t for t in request["tables"] if self._table_oid(t) is not None]
        unknown = sorted(set(request["tables"]) - set(tables))
        if unknown:
            log.warning("snapshot request %s: not captured, skipped: %s", request["id"], unknown)
        if current is None:
            self._changed({"id": request["id"], "tables": tables, "last_key": None})
        else:
            requests = [*current.get("requests", [current["id"]]), request["id"]]
            self._changed({**current, "tables": current["tables"] + tables, "requests": requests})
        log.info("incremental snapshot %s of %s requested", request["id"], tables)

    def _table_oid(self, qualified: str) -> int | None:
        schema, _, name = qualified.partition(".")
        for oid, codec in self.capture._codecs.items():
            if codec.schema == schema and codec.table == name:
                return oid
        return None

    def ready(self) -> bool:
        """True when a chunk can start now (work queued, none in flight)."""
        return self.chunk is None and bool(self.progress and self.progress["tables"])

    def tick(self) -> None:
        """Start the next chunk if there is work and none is in flight."""
        progress = self.progress
        if self.chunk is not None or not progress or not progress["tables"]:
            return
        oid = self._table_oid(progress["tables"][0])
        if oid is None:  # the table left the publication: skip it
            self.progress = {**progress, "tables": progress["tables"][1:], "last_key": None}
            return
        chunk = _Chunk(f"{progress['id']}:{uuid.uuid4().hex[:8]}", oid)
        self._emit_watermark(chunk.id, "low")
        self._read(chunk, progress["last_key"])
        self._emit_watermark(chunk.id, "high")
        self.chunk = chunk

    def _emit_watermark(self, chunk_id: str, kind: str) -> None:
        payload = orjson.dumps({"chunk": chunk_id, "kind": kind}).decode()
        with self.catalog.cursor() as cur:
            cur.execute("SELECT pg_logical_emit_message(true, %s, %s)", (WATERMARK_PREFIX, payload))

    def _read(self, chunk: _Chunk, after: list[str] | None) -> None:
        codec = self.capture._codecs[chunk.oid]
        table = self.capture._tables[chunk.oid]
        with self.catalog.cursor() as cur:
            cur.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped",
                (chunk.oid,),
            )
            type_of = dict(cur.fetchall())
            keys = sql.SQL(", ").join(map(sql.Identifier, codec.key))
            query = sql.SQL("SELECT {} FROM {}").format(
                sql.SQL(", ").join(map(sql.Identifier, codec.names)), table.qualified
            )
            params: list[Any] = []
            if after is not None:
                # Text-format key values cast back with the column's own type: exact bounds.
                bounds = sql.SQL(", ").join(
                    sql.SQL("%s::{}").format(sql.SQL(type_of[k])) for k in codec.key
                )
                query = sql.SQL("{} WHERE ({}) > ({})").format(query, keys, bounds)
                params = list(after)
            query = sql.SQL("{} ORDER BY {} LIMIT {}").format(
                query, keys, sql.Literal(self.capture.source.snapshot_chunk_rows)
            )
            key_index = [codec.names.index(k) for k in codec.key]

            def line(values: list[pg.Value]) -> None:
                row, _ = codec.row(values)
                chunk.rows[encode_json(codec.key_of(row))] = values
                chunk.read += 1
                chunk.last_key = [values[i] for i in key_index]

            copy_rows(cur, query, params, line)

    def discard(self, oid: int, key: dict[str, Any] | None) -> None:
        """A change to ``key`` inside the window: the log's version wins over the chunk's."""
        chunk = self.chunk
        if chunk is not None and chunk.window_open and chunk.oid == oid and key is not None:
            chunk.rows.pop(encode_json(key), None)

    def on_watermark(self, content: bytes, lsn: int, emit: Any) -> None:
        """A watermark reached the stream: open the window, or close it and emit the rows.

        ``emit(codec, values, lsn)`` sends one 'r' event in the current transaction.
        """
        mark = orjson.loads(content)
        chunk = self.chunk
        if chunk is None or mark["chunk"] != chunk.id:
            return  # a watermark from before a restart
        if mark["kind"] == "low":
            chunk.window_open = True
            return
        codec = self.capture._codecs[chunk.oid]
        for values in chunk.rows.values():
            emit(codec, values, lsn)
        self.rows_emitted += len(chunk.rows)
        progress = self.progress
        assert progress is not None
        if chunk.read < self.capture.source.snapshot_chunk_rows:  # the table is exhausted
            rest = progress["tables"][1:]
            following = {**progress, "tables": rest, "last_key": None} if rest else None
            if not rest:
                log.info("incremental snapshot %s done", progress["id"])
                self._changed(None, progress.get("requests", [progress["id"]]))
                self.chunk = None
                return
        else:
            following = {**progress, "last_key": chunk.last_key}
        self._changed(following)
        self.chunk = None

    def seal(self, end_lsn: int) -> None:
        """The current transaction ended at ``end_lsn``: its progress waits for Kafka."""
        if self._unsealed:
            finished = [i for _, ids in self._unsealed for i in ids]
            self._pending.append((end_lsn, self._unsealed[-1][0], finished))
            self._unsealed = []

    def confirmed(self, lsn: int) -> dict[str, Any] | bool | None:
        """Progress to persist now that Kafka confirmed up to ``lsn`` (False: nothing new);
        requests finished by then are added to `completed`."""
        done = [(p, ids) for end, p, ids in self._pending if end <= lsn]
        if not done:
            return False
        self._pending = [entry for entry in self._pending if entry[0] > lsn]
        self.completed += [i for _, ids in done for i in ids]
        return done[-1][0]
