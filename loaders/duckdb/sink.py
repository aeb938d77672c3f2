"""The DuckDB sink: current-state and history tables, offsets in the same transaction.

Written by hand rather than with dlt: dlt's merge replaces rows with the newest staged ones,
but a change-data target must also refuse an *older* change than the one it holds (a replayed
window, a re-snapshot), keep deleted keys from coming back, and keep TOAST-unchanged values;
none of that is expressible in dlt's merge. DuckDB does it in a few set-based statements.

Batches are staged in this database itself (`loaders.staging`: DuckDB parses the raw Kafka
values, Python touches each record only to group it by table), then applied with the
statements every SQL target shares, in one transaction with the offsets.

The file is shared with other processes between batches (DuckDB lets one process at a time
open a file for writing, and none read it meanwhile): it is attached to a long-lived in-memory
instance for each batch (`_Attachment`), readers get a turn between back-to-back batches
(`READERS_TURN`), and `attached` gives another process a cheap look.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import duckdb

from loaders.base import POSITION, LoadBatch, Mode, Sink, TableBatch
from loaders.duckdb.types import cast_expression, duckdb_type
from loaders.sql import (
    HISTORY_COLUMNS,
    Dialect,
    Scd2Views,
    current_state,
    evolve,
    history,
    q,
)
from loaders.staging import Stager
from sluiceway.errors import SinkFatal, SinkUnavailable
from streaming.events import ColumnSchema

__all__ = ["DuckDBSink", "attached", "open_duckdb"]

OFFSETS = "_sluiceway_offsets"

T = TypeVar("T")

ROW_GROUP_ROWS = 16_384
"""Rows per row group in the files a sink writes (DuckDB's default is 122,880).

A checkpoint — every detach — compresses a row group once it is full, which stalls the batch
that fills it: at 10,000 changes/s that was a 300-500 ms pause every 12 s, the end-to-end
latency's p99. Smaller row groups spread the same work: appending 1,000-row batches, the
longest detach fell from 182 ms to 41 ms and their sum from 1.9 s to 1.5 s.
"""

READERS_TURN = 0.01
"""Seconds a shared sink leaves the file free between two batches that come back to back.

DuckDB's file lock does not queue: a reader that finds the file locked can only try again.
A loader that re-attaches the file the moment it detached it — whenever the next batch is
already waiting, as under a steady 10,000 changes/s — would leave a reader (the latency
benchmark's, polling every 5 ms) locked out for seconds at a time; measured: gaps of 1.7 s
between two successful looks, which were the whole p99 of the end-to-end latency. A pause of
10 ms gives a reader polling every 5 ms a look between any two batches; it costs only when
batches come back to back, 10-20% of a batch's own time at that rate.
"""


_DIALECT = Dialect(
    cast=cast_expression,
    contains=lambda items, literal: f"list_contains({items}, {literal})",
    temp_table=lambda name, select: [f"CREATE OR REPLACE TEMP TABLE {name} AS {select}"],
    from_ms=lambda ms: f"to_timestamp({ms} / 1000.0)",
)


def _lock_wait(attempt: Callable[[], T], path: Path, wait: float) -> T:
    """``attempt()``, again while another process holds ``path``'s lock, up to ``wait`` s.

    Raises:
        SinkUnavailable: it stayed locked for ``wait`` seconds, or cannot be opened.
    """
    deadline = time.monotonic() + wait
    pause = 0.001
    while True:
        try:
            return attempt()
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise SinkUnavailable(f"cannot open {path}: {exc}") from exc
            # A reader holds the file for milliseconds: look again soon, then back off.
            time.sleep(pause)
            pause = min(pause * 2, 0.05)


def open_duckdb(path: Path, wait: float = 120.0) -> duckdb.DuckDBPyConnection:
    """Open a DuckDB file in a DuckDB instance of its own, waiting while another process
    holds its lock. For a connection held a long time; for a look, `attached` costs less."""
    return _lock_wait(lambda: duckdb.connect(str(path)), path, wait)


def _literal(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


class _Attachment:
    """A DuckDB file attached to a long-lived in-memory instance, and detached again.

    Creating a DuckDB instance costs about 20 ms of CPU whatever the file (its catalog of
    built-in functions), and closing one checkpoints; attaching a file to an instance that
    already exists costs about 1 ms and detaching about 4 ms with the checkpoint. A process
    that opens the file for moments at a time — a sink that lets other processes in between
    batches, a reader that looks every 100 ms — keeps one instance and attaches the file.
    """

    def __init__(
        self,
        path: Path,
        *,
        read_only: bool = False,
        turn: float = 0.0,
        host: duckdb.DuckDBPyConnection | None = None,
        alias: str = "target",
    ) -> None:
        """``turn``: how long the file stays free after a detach before this process attaches
        it again (see `DuckDBSink`). ``host``: an instance to attach to (shared with other
        attachments under other aliases), else one of its own."""
        self.path = path
        self.read_only = read_only
        self.turn = turn
        self.alias = alias
        # One DuckDB thread: the loader reads Kafka on another core meanwhile, and batches of
        # a few thousand rows gain nothing from a second thread that must be woken for every
        # statement. Measured on 2 cores: a batch of ~1,100 rows at 10,000 changes/s took
        # 51-66 ms against 130-170 ms with two threads, and a 300k-row bounded load ran at
        # 99k rows/s against 93k.
        self._own = host is None
        self.host = duckdb.connect(":memory:", config={"threads": 1}) if host is None else host
        self.attached = False
        self._before = "memory"  # the database in use before the attach, restored after
        self._detached = -turn
        self._left: tuple[int, int, bool] | None = None  # the file as this process left it
        self.unchanged = False  # since this process last detached it (see `attach`)

    def attach(self, wait: float = 120.0) -> duckdb.DuckDBPyConnection:
        """The instance with the file attached and in use, waiting while it is locked."""
        if not self.attached:
            pause = self._detached + self.turn - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            option = "READ_ONLY" if self.read_only else f"ROW_GROUP_SIZE {ROW_GROUP_ROWS}"
            statement = f"ATTACH {_literal(self.path)} AS {self.alias} ({option})"
            _lock_wait(lambda: self.host.execute(statement), self.path, wait)
            self._before = self.host.execute("SELECT current_database()").fetchall()[0][0]
            self.host.execute(f"USE {self.alias}")
            self.attached = True
            # Taken under the lock: whether another process wrote the file in between (a
            # look does not touch it; a write changes its time or size, or leaves a WAL).
            self.unchanged = self._left is not None and self._stamp() == self._left
        return self.host

    def _stamp(self) -> tuple[int, int, bool]:
        stat = self.path.stat()
        return stat.st_mtime_ns, stat.st_size, self.path.with_name(self.path.name + ".wal").exists()

    def detach(self) -> None:
        """Checkpoint and let other processes open the file."""
        if self.attached:
            self.host.execute(f"USE {self._before}")
            self.host.execute(f"DETACH {self.alias}")
            self.attached = False
            self._detached = time.monotonic()
            self._left = self._stamp()

    def close(self) -> None:
        self.detach()
        if self._own:
            self.host.close()


_readers = threading.local()
_looks = itertools.count()


@contextlib.contextmanager
def attached(
    path: Path, *, read_only: bool = True, wait: float = 120.0
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to the DuckDB file at ``path`` for one look, released on leaving.

    Each thread keeps one in-memory DuckDB instance to attach files to (see `_Attachment`);
    a look inside another look attaches under its own alias and leaves the outer one in use.

    Raises:
        SinkUnavailable: another process held the file for ``wait`` seconds.
    """
    host: duckdb.DuckDBPyConnection | None = getattr(_readers, "host", None)
    if host is None:
        # One thread, as the sink's (`_Attachment`): a look is small and the caller's own.
        host = _readers.host = duckdb.connect(":memory:", config={"threads": 1})
    look = _Attachment(path, read_only=read_only, host=host, alias=f"look{next(_looks)}")
    conn = look.attach(wait)
    try:
        yield conn
    finally:
        look.detach()


class DuckDBSink(Sink):
    """Loads change events into a DuckDB database file."""

    name = "duckdb"

    def __init__(self, path: Path, schema: str, *, shared: bool = True) -> None:
        """``shared``: hold the file only while writing, so that other processes (a batch
        load, a parity check, a notebook) can open it between batches — DuckDB lets one
        process at a time open a file for writing."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.schema = schema
        self.shared = shared
        self._file = _Attachment(path, turn=READERS_TURN if shared else 0.0)
        # Stages in the instance the file is attached to, inside the write's transaction.
        self.stager = Stager(self._file.host, transactional=True)
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._columns: dict[str, dict[str, str]] = {}
        self.views = Scd2Views(_DIALECT)
        self.conn.execute(f"CREATE SCHEMA IF NOT EXISTS {q(schema)}")
        self.conn.execute(
            f"CREATE TABLE IF NOT EXISTS {q(schema)}.{OFFSETS} (grp VARCHAR, topic VARCHAR, "
            "part INTEGER, next_offset BIGINT, PRIMARY KEY (grp, topic, part))"
        )
        self.release()

    @property
    def conn(self) -> duckdb.DuckDBPyConnection:
        """The open connection (opened on use; waits while another process holds the file)."""
        if self._conn is None:
            self._conn = self._file.attach()
            if not self._file.unchanged:
                self._columns.clear()  # another process may have evolved the tables since
        return self._conn

    def release(self) -> None:
        """Let other processes open the file (a shared sink reopens it on next use)."""
        if self.shared and self._conn is not None:
            self._file.detach()
            self._conn = None

    def table_name(self, batch: TableBatch, suffix: str = "") -> str:
        """``<target schema>.<table><suffix>``, quoted."""
        return f"{q(self.schema)}.{q(batch.target_name(suffix))}"

    # --- offsets ---------------------------------------------------------------------------
    def stored_offsets(self, group: str) -> dict[tuple[str, int], int]:
        rows = self.conn.execute(
            f"SELECT topic, part, next_offset FROM {q(self.schema)}.{OFFSETS} WHERE grp = ?",
            [group],
        ).fetchall()
        self.release()
        return {(topic, part): offset for topic, part, offset in rows}

    def _store_offsets(self, batch: LoadBatch) -> None:
        # One statement for every partition: executemany costs a statement per row.
        values = [v for (t, p), o in batch.offsets.items() for v in (batch.group, t, p, o)]
        if values:
            rows = ", ".join(["(?, ?, ?, ?)"] * (len(values) // 4))
            self.conn.execute(
                f"INSERT OR REPLACE INTO {q(self.schema)}.{OFFSETS} VALUES {rows}", values
            )

    # --- tables and their evolution --------------------------------------------------------
    def _ensure(self, name: str, columns: list[ColumnSchema], extra: list[str]) -> None:
        known = self._columns.get(name)
        if known is None:
            schema, table = name.split(".", 1)
            found = self.conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_catalog = current_database() AND table_schema = ? AND table_name = ?",
                [schema.strip('"'), table.strip('"')],
            ).fetchall()
            known = {column: kind for column, kind in found}
            if not known:
                definition = [f"{q(c.name)} {duckdb_type(c)}" for c in columns] + extra
                self.conn.execute(f"CREATE TABLE {name} ({', '.join(definition)})")
                known = {c.name: duckdb_type(c) for c in columns}
            self._columns[name] = known
        for statement in evolve(name, known, columns, duckdb_type):
            self.conn.execute(statement)

    # --- writing ---------------------------------------------------------------------------
    def prepare(self, batch: LoadBatch, mode: Mode) -> None:
        """Parse and stage each table's records while the batch before is written
        (`Stager.prepare`); `write` then reads them in place. Parsing is the largest statement
        of a write (a 1M-event replay: 1.3 s of the write thread's 3.2 s)."""
        self.stager.prepare(batch, mode)

    def write(self, batch: LoadBatch, mode: Mode) -> None:
        self.conn.execute("BEGIN TRANSACTION")
        try:
            for table in batch.tables.values():
                if mode in ("current", "both"):
                    self._current(table)
                if mode in ("history", "both"):
                    self._history(table)
            self._store_offsets(batch)
            self.conn.execute("COMMIT")
        except duckdb.Error as exc:
            self._rollback()
            raise SinkFatal(f"DuckDB refused the batch: {exc}") from exc
        except Exception:
            self._rollback()
            raise
        finally:
            self.stager.finish()
            self.release()

    def _rollback(self) -> None:
        self.conn.execute("ROLLBACK")
        self._columns.clear()  # the rolled-back DDL is gone too
        self.views.forget()

    def _current(self, table: TableBatch) -> None:
        keys = table.key_columns()
        target, guard = self.table_name(table), self.table_name(table, "__deletes")
        columns = list(table.schema.columns)
        position = [f"{POSITION[0]} BIGINT", f"{POSITION[1]} BIGINT"]
        self._ensure(target, columns, position)
        self._ensure(guard, keys, position)
        if not self.stager.stage(table, latest=True):
            return
        unchanged = self.stager.unchanged
        for statement in current_state(
            _DIALECT, target, guard, columns, "staged", unchanged=unchanged
        ):
            self.conn.execute(statement)

    def _history(self, table: TableBatch) -> None:
        target = self.table_name(table, "__history")
        columns = list(table.schema.columns)
        self._ensure(target, columns, [f"{n} {t.upper()}" for n, t in HISTORY_COLUMNS])
        if not self.stager.stage(table, latest=False):
            return
        topic = table.raw.topic if table.raw is not None else table.changes[0].topic
        self.conn.execute(history(_DIALECT, target, columns, "staged", topic))
        view = self.views.statement(self.table_name(table, "__scd2"), target, columns)
        if view is not None:
            self.conn.execute(view)

    def close(self) -> None:
        self._file.close()
        self._conn = None
        self.stager.close()
