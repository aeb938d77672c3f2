"""The initial snapshot: every captured table read consistently at the slot's starting point.

Capture creates the slot with an exported snapshot; each worker connection here starts a
REPEATABLE READ transaction with ``SET TRANSACTION SNAPSHOT`` to it, so every worker sees the
database exactly as of the slot's consistent point, and streaming from that point afterwards
neither misses nor repeats a change. Tables are split into primary-key ranges (boundaries every
``chunk_rows`` keys) and the chunks are read in parallel with ``COPY (SELECT ...) TO STDOUT``,
whose text format is the one pgoutput uses, so one set of converters serves both paths.

Tables whose every column type PostgreSQL can encode exactly as the converters do
(`pgtypes.JSON_IN_SERVER`: integers, booleans, text, numeric, uuid, json, dates and
timestamps) are read the lean way: the chunk's query is ``row_to_json`` of the key and of the
row, so the server processes build the JSON (in C, on as many cores as there are workers) and
Python only frames the bytes into the envelope and hands them to the producer. Python's share
per row drops from about 14 µs to about 3 µs, which is what bounds a snapshot on a small machine.

Those rows also come in blocks (up to `BLOCK_BYTES` of rows joined by PostgreSQL into one COPY
line) rather than one line each: psycopg2 hands each line of a COPY to Python on its own, taking the
GIL back from the worker's read of the socket for every row, and with two workers and the
producer's threads that handover per row cost more than all the framing (a 1M-row table:
capture's CPU 8.5 s with a line per row against 3.4 s in blocks; `bench.snapshot_postgres`
went from 96k-154k to 275k rows/s).
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

__all__ = [
    "BLOCK_BYTES",
    "Chunk",
    "JsonHandler",
    "JsonRows",
    "SnapshotReader",
    "chunk_table",
    "copy_rows",
    "json_query",
    "parse_copy_line",
]

# The size of a line of a `json_query` COPY: rows are added while their bytes, each counted
# as at least `_ROW_WEIGHT`, stay within `BLOCK_BYTES` -- so at most 1,024 small rows, and a
# block of wide rows stays a few MiB instead of growing toward PostgreSQL's 1 GB text limit.
# And the separators inside one: JSON text never holds a control character, so neither can
# occur in a key or a row, and COPY's text format leaves them as they are (it escapes only
# \b \f \n \r \t \v and the backslash).
BLOCK_BYTES = 8 << 20
_ROW_WEIGHT = BLOCK_BYTES // 1024
_ROW_END, _KEY_END = b"\x1e", b"\x1f"

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


def _where(
    query: sql.Composed, chunk: Chunk, alias: str | None = None
) -> tuple[sql.Composed, list[Any]]:
    """``query`` restricted to the chunk's key range (key columns qualified by ``alias``)."""
    names = [sql.Identifier(alias, k) if alias else sql.Identifier(k) for k in chunk.table.key]
    keys = sql.SQL(", ").join(names)
    where: list[sql.Composable] = []
    params: list[Any] = []
    for bound, op in ((chunk.lower, ">"), (chunk.upper, "<=")):
        if bound is not None:
            marks = sql.SQL(", ").join(sql.Placeholder() * len(bound))
            where.append(sql.SQL("({}) {} ({})").format(keys, sql.SQL(op), marks))
            params.extend(bound)
    if where:
        query = sql.SQL("{} WHERE {}").format(query, sql.SQL(" AND ").join(where))
    return query, params


def _chunk_query(chunk: Chunk, columns: list[str]) -> tuple[sql.Composed, list[Any]]:
    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    return _where(sql.SQL("SELECT {} FROM {}").format(cols, chunk.table.qualified), chunk)


def json_query(
    chunk: Chunk, columns: list[str], templates: list[str], key: tuple[str, ...]
) -> tuple[sql.Composed, list[Any]]:
    """The chunk as blocks of rows (`BLOCK_BYTES`), each one text built by PostgreSQL: per row
    the key's JSON (empty without a key), ``\\x1f``, the row's JSON, each column through its
    `pgtypes.JSON_IN_SERVER` template; rows ended by ``\\x1e``."""

    def select(names: list[str]) -> sql.Composed:
        exprs = [
            sql.SQL("{} AS {}").format(
                sql.SQL(templates[columns.index(n)].replace("{c}", "{0}")).format(
                    sql.Identifier("t", n)
                ),
                sql.Identifier(n),
            )
            for n in names
        ]
        return sql.SQL("SELECT {}").format(sql.SQL(", ").join(exprs))

    key_json = sql.SQL("row_to_json(k)::text") if key else sql.SQL("''")
    lateral_key = (
        sql.SQL(" CROSS JOIN LATERAL ({}) k").format(select(list(key))) if key else sql.SQL("")
    )
    lines = sql.SQL(
        "SELECT {key_json} || E'\\x1f' || row_to_json(r)::text AS line FROM {table} t"
        "{lateral_key} CROSS JOIN LATERAL ({row}) r"
    ).format(
        key_json=key_json,
        table=chunk.table.qualified,
        lateral_key=lateral_key,
        row=select(columns),
    )
    lines, params = _where(lines, chunk, "t")
    # OFFSET 0 keeps the lines a subquery of their own: inlined, each one's JSON would be
    # built twice (for the block's running size, then for the block).
    query = sql.SQL(
        "SELECT string_agg(line, E'\\x1e') FROM ("
        "SELECT line, sum(greatest(octet_length(line), {weight})) OVER (ROWS UNBOUNDED PRECEDING)"
        " / {size} AS block FROM ({lines} OFFSET 0) l) blocks GROUP BY block"
    ).format(weight=sql.Literal(_ROW_WEIGHT), size=sql.Literal(BLOCK_BYTES), lines=lines)
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


JsonRows = list[tuple[bytes | None, bytes]]  # (key JSON or None, row JSON) per row
JsonHandler = Callable[[JsonRows], None]


class _JsonSink:
    """The target of a `json_query` COPY: each line a block of rows, in which COPY's text
    format has doubled every backslash (JSON holds no raw control character, so nothing else
    is escaped); each block goes to ``on_json`` as one list."""

    def __init__(self, on_json: JsonHandler) -> None:
        self._on_json = on_json
        self._rest = b""

    def write(self, data: bytes | str) -> int:
        raw = data.encode() if isinstance(data, str) else data
        buffer = self._rest + raw if self._rest else raw
        *lines, self._rest = buffer.split(b"\n")
        for line in lines:
            if b"\\" in line:
                line = line.replace(b"\\\\", b"\\")
            self._on_json(
                [
                    (key or None, row)
                    for key, _, row in (r.partition(_KEY_END) for r in line.split(_ROW_END))
                ]
            )
        return len(raw)


def copy_rows(
    cur: Any, query: sql.Composable, params: list[Any], on_values: Callable[[list[Value]], None]
) -> None:
    """Run ``COPY (query) TO STDOUT`` and hand each row's text values to ``on_values``."""
    statement = sql.SQL("COPY ({}) TO STDOUT").format(query)
    cur.copy_expert(cur.mogrify(statement, params).decode(), _LineSink(on_values))


RowHandler = Callable[[TableInfo, list[str], list[Value]], None]
TableJsonHandler = Callable[[TableInfo, JsonRows], None]


class SnapshotReader:
    """Reads tables in parallel at one exported snapshot, handing each row to ``on_row``.

    ``on_row`` is called from the worker threads (it must be thread-safe: producing to
    confluent-kafka is). ``connect`` opens a new connection with the session settings applied.
    ``in_server`` names the tables PostgreSQL encodes (by OID: a `pgtypes.JSON_IN_SERVER`
    template per column); their rows go to ``run``'s ``on_json`` as JSON bytes instead, a
    block (`BLOCK_BYTES`) at a time.
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
        in_server: dict[int, list[str]] | None = None,
    ) -> None:
        self._connect = connect
        self._snapshot = snapshot_name
        self._tables = tables
        self._columns = columns
        self._workers = max(1, workers)
        self._chunk_rows = chunk_rows
        self._in_server = in_server or {}
        self.rows_read = 0
        self.rows_encoded_in_server = 0
        self.estimated_rows = sum(t.estimated_rows for t in tables)
        self._lock = threading.Lock()

    def _begin(self) -> Any:
        conn = self._connect()
        with conn.cursor() as cur:
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            cur.execute("SET TRANSACTION SNAPSHOT %s", (self._snapshot,))
            # A chunk's blocks (`json_query`) are aggregated in memory: room for a chunk of
            # wide rows without spilling.
            cur.execute("SET LOCAL work_mem = '64MB'")
        return conn

    def run(
        self,
        on_row: RowHandler,
        on_progress: Callable[[int], None] | None = None,
        on_json: TableJsonHandler | None = None,
    ) -> int:
        """Read every table; returns the rows read. Raises the first worker's error."""
        if on_json is None and self._in_server:
            raise ValueError("tables encoded in the server need on_json")
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
                    self._read(conn, chunk, on_row, on_json)
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

    def _read(
        self, conn: Any, chunk: Chunk, on_row: RowHandler, on_json: TableJsonHandler | None
    ) -> None:
        table = chunk.table
        columns = self._columns[table.oid]
        templates = self._in_server.get(table.oid)
        count = 0

        def counted() -> None:
            nonlocal count
            count += 1
            if count % 5000 == 0:
                with self._lock:
                    self.rows_read += 5000

        def row(values: list[Value]) -> None:
            on_row(table, columns, values)
            counted()

        def encoded(rows: JsonRows) -> None:
            nonlocal count
            assert on_json is not None
            on_json(table, rows)
            count += len(rows)
            with self._lock:
                self.rows_read += len(rows)

        with conn.cursor() as cur:
            try:
                if templates is None:
                    query, params = _chunk_query(chunk, columns)
                    copy_rows(cur, query, params, row)
                else:
                    query, params = json_query(chunk, columns, templates, table.key)
                    statement = sql.SQL("COPY ({}) TO STDOUT").format(query)
                    cur.copy_expert(cur.mogrify(statement, params).decode(), _JsonSink(encoded))
            except (psycopg2.errors.UndefinedTable, psycopg2.errors.InsufficientPrivilege) as exc:
                raise SourceFatal(f"snapshot of {table.name}: {exc}") from exc
        with self._lock:
            if templates is None:
                self.rows_read += count % 5000
            else:
                self.rows_encoded_in_server += count
