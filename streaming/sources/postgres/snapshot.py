"""The initial snapshot: every captured table read consistently at the slot's starting point.

Capture creates the slot with an exported snapshot; each worker connection here starts a
REPEATABLE READ transaction with ``SET TRANSACTION SNAPSHOT`` to it, so every worker sees the
database exactly as of the slot's consistent point, and streaming from that point afterwards
neither misses nor repeats a change. Tables are split into primary-key ranges (boundaries every
``chunk_rows`` keys) and the chunks are read in parallel with ``COPY (SELECT ...) TO STDOUT``,
whose text format is the one pgoutput uses, so one set of converters serves both paths.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg2.errors
from psycopg2 import sql

from sluiceway.errors import SourceFatal
from streaming.sources.postgres.catalog import TableInfo
from streaming.sources.postgres.pgoutput import Value

__all__ = ["Chunk", "SnapshotReader", "chunk_table", "copy_rows", "parse_copy_line"]

_ESCAPES = {"\\": "\\", "n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", "v": "\v"}


def _unescape(field: str) -> str:
    out = []
    i = 0
    n = len(field)
    while i < n:
        ch = field[i]
        if ch == "\\" and i + 1 < n:
            nxt = field[i + 1]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
            if nxt.isdigit():  # \ooo octal (COPY never writes it, but accepts it)
                out.append(chr(int(field[i + 1 : i + 4], 8)))
                i += 4
                continue
        out.append(ch)
        i += 1
    return "".join(out)


def parse_copy_line(line: str) -> list[Value]:
    """One line of COPY's text format into text values (None for NULL)."""
    fields: list[Value] = []
    for field in line.split("\t"):
        if field == "\\N":
            fields.append(None)
        elif "\\" in field:
            fields.append(_unescape(field))
        else:
            fields.append(field)
    return fields


@dataclass(frozen=True)
class Chunk:
    """A primary-key range of one table: lower bound exclusive, upper inclusive (None: open)."""

    table: TableInfo
    lower: tuple[Any, ...] | None
    upper: tuple[Any, ...] | None


def chunk_table(cur: Any, table: TableInfo, chunk_rows: int) -> list[Chunk]:
    """Split a table into key ranges of about ``chunk_rows`` rows."""
    if not table.key or table.estimated_rows < chunk_rows * 2:
        return [Chunk(table, None, None)]
    keys = sql.SQL(", ").join(map(sql.Identifier, table.key))
    cur.execute(
        sql.SQL(
            "SELECT {keys} FROM (SELECT {keys}, row_number() OVER (ORDER BY {keys}) AS rn "
            "FROM {table}) s WHERE rn %% %s = 0 ORDER BY rn"
        ).format(keys=keys, table=table.qualified),
        (chunk_rows,),
    )
    bounds = [tuple(row) for row in cur.fetchall()]
    edges: list[tuple[Any, ...] | None] = [None, *bounds, None]
    return [Chunk(table, lo, hi) for lo, hi in itertools.pairwise(edges)]


def _chunk_query(chunk: Chunk, columns: list[str]) -> tuple[sql.Composed, list[Any]]:
    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    keys = sql.SQL(", ").join(map(sql.Identifier, chunk.table.key))
    where: list[sql.Composable] = []
    params: list[Any] = []
    for bound, op in ((chunk.lower, ">"), (chunk.upper, "<=")):
        if bound is not None:
            marks = sql.SQL(", ").join(sql.Placeholder() * len(bound))
            where.append(sql.SQL("({}) {} ({})").format(keys, sql.SQL(op), marks))
            params.extend(bound)
    query = sql.SQL("SELECT {} FROM {}").format(cols, chunk.table.qualified)
    if where:
        query = sql.SQL("{} WHERE {}").format(query, sql.SQL(" AND ").join(where))
    return query, params


class _LineSink:
    """A file-like target for copy_expert that hands over complete lines, parsed."""

    def __init__(self, on_values: Callable[[list[Value]], None]) -> None:
        self._on_values = on_values
        self._rest = b""

    def write(self, data: bytes | str) -> int:
        raw = data.encode() if isinstance(data, str) else data
        buffer = self._rest + raw
        *lines, self._rest = buffer.split(b"\n")
        for line in lines:
            self._on_values(parse_copy_line(line.decode()))
        return len(raw)


def copy_rows(
    cur: Any, query: sql.Composable, params: list[Any], on_values: Callable[[list[Value]], None]
) -> None:
    """Run ``COPY (query) TO STDOUT`` and hand each row's text values to ``on_values``."""
    statement = sql.SQL("COPY ({}) TO STDOUT").format(query)
    cur.copy_expert(cur.mogrify(statement, params).decode(), _LineSink(on_values))


RowHandler = Callable[[TableInfo, list[str], list[Value]], None]


class SnapshotReader:
    """Reads tables in parallel at one exported snapshot, handing each row to ``on_row``.

    ``on_row`` is called from the worker threads (it must be thread-safe: producing to
    confluent-kafka is). ``connect`` opens a new connection with the session settings applied.
    """

    def __init__(
        self,
        connect: Callable[[], Any],
        snapshot_name: str,
        tables: list[TableInfo],
        columns: dict[int, list[str]],
        *,
        workers: int = 2,
        chunk_rows: int = 50_000,
    ) -> None:
        self._connect = connect
        self._snapshot = snapshot_name
        self._tables = tables
        self._columns = columns
        self._workers = max(1, workers)
        self._chunk_rows = chunk_rows
        self.rows_read = 0
        self.estimated_rows = sum(t.estimated_rows for t in tables)
        self._lock = threading.Lock()

    def _begin(self) -> Any:
        conn = self._connect()
        with conn.cursor() as cur:
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            cur.execute("SET TRANSACTION SNAPSHOT %s", (self._snapshot,))
        return conn

    def run(self, on_row: RowHandler, on_progress: Callable[[int], None] | None = None) -> int:
        """Read every table; returns the rows read. Raises the first worker's error."""
        # Every worker imports the snapshot before this returns, so the exporting replication
        # connection may move on (START_REPLICATION) as soon as the rows are all read.
        conns = [self._begin() for _ in range(self._workers)]
        chunks: queue.Queue[Chunk | None] = queue.Queue()
        with conns[0].cursor() as cur:
            for table in self._tables:
                for chunk in chunk_table(cur, table, self._chunk_rows):
                    chunks.put(chunk)
        for _ in conns:
            chunks.put(None)
        errors: list[BaseException] = []

        def work(conn: Any) -> None:
            try:
                for chunk in iter(chunks.get, None):
                    if errors:
                        return
                    self._read(conn, chunk, on_row)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller below
                errors.append(exc)
            finally:
                conn.rollback()
                conn.close()

        threads = [threading.Thread(target=work, args=(c,), daemon=True) for c in conns]
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            for thread in threads:
                thread.join(0.5)
            if on_progress is not None:
                on_progress(self.rows_read)
        if errors:
            raise errors[0]
        return self.rows_read

    def _read(self, conn: Any, chunk: Chunk, on_row: RowHandler) -> None:
        columns = self._columns[chunk.table.oid]
        query, params = _chunk_query(chunk, columns)
        count = 0

        def row(values: list[Value]) -> None:
            nonlocal count
            on_row(chunk.table, columns, values)
            count += 1
            if count % 5000 == 0:
                with self._lock:
                    self.rows_read += 5000

        with conn.cursor() as cur:
            try:
                copy_rows(cur, query, params, row)
            except (psycopg2.errors.UndefinedTable, psycopg2.errors.InsufficientPrivilege) as exc:
                raise SourceFatal(f"snapshot of {chunk.table.name}: {exc}") from exc
        with self._lock:
            self.rows_read += count % 5000
