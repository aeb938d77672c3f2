"""The DuckDB sink: current-state and history tables, offsets in the same transaction.

Written by hand rather than with dlt: dlt's merge replaces rows with the newest staged ones,
but a change-data target must also refuse an *older* change than the one it holds (a replayed
window, a re-snapshot), keep deleted keys from coming back, and keep TOAST-unchanged values;
none of that is expressible in dlt's merge. DuckDB does it in a few set-based statements.

Batches are staged in this database itself (`loaders.staging`: DuckDB parses the raw Kafka
values, Python touches each record only to group it by table), then applied with the
statements every SQL target shares, in one transaction with the offsets.
"""

from __future__ import annotations

import time
from pathlib import Path

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

__all__ = ["DuckDBSink"]

OFFSETS = "_sluiceway_offsets"


_DIALECT = Dialect(
    cast=cast_expression,
    contains=lambda items, literal: f"list_contains({items}, {literal})",
    temp_table=lambda name, select: [f"CREATE OR REPLACE TEMP TABLE {name} AS {select}"],
    from_ms=lambda ms: f"to_timestamp({ms} / 1000.0)",
)


def open_duckdb(path: Path, wait: float = 120.0) -> duckdb.DuckDBPyConnection:
    """Open a DuckDB file, waiting while another process holds its lock.

    Raises:
        SinkUnavailable: it stayed locked for ``wait`` seconds, or cannot be opened.
    """
    deadline = time.monotonic() + wait
    pause = 0.001
    while True:
        try:
            return duckdb.connect(str(path))
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise SinkUnavailable(f"cannot open {path}: {exc}") from exc
            # A reader holds the file for milliseconds: look again soon, then back off.
            time.sleep(pause)
            pause = min(pause * 2, 0.05)


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
            self._conn = open_duckdb(self.path)
            self.stager = Stager(self._conn)
            self._columns.clear()  # another process may have evolved the tables since
        return self._conn

    def release(self) -> None:
        """Let other processes open the file (a shared sink reopens it on next use)."""
        if self.shared and self._conn is not None:
            self._conn.close()
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
        rows = [(batch.group, t, p, o) for (t, p), o in batch.offsets.items()]
        if rows:
            self.conn.executemany(
                f"INSERT OR REPLACE INTO {q(self.schema)}.{OFFSETS} VALUES (?, ?, ?, ?)", rows
            )

    # --- tables and their evolution --------------------------------------------------------
    def _ensure(self, name: str, columns: list[ColumnSchema], extra: list[str]) -> None:
        known = self._columns.get(name)
        if known is None:
            schema, table = name.split(".", 1)
            found = self.conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = ? AND table_name = ?",
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
        for statement in current_state(_DIALECT, target, guard, columns, "staged"):
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
        if self._conn is not None:
            self._conn.close()
            self._conn = None
