"""The DuckDB sink: current-state and history tables, offsets in the same transaction.

Written by hand rather than with dlt: dlt's merge replaces rows with the newest staged ones,
but a change-data target must also refuse an *older* change than the one it holds (a replayed
window, a re-snapshot), keep deleted keys from coming back, and keep TOAST-unchanged values;
none of that is expressible in dlt's merge. DuckDB does it in a few set-based statements.

Each batch is staged as strings (the event encoding is exact text) through Arrow, then cast
in SQL to the column types, inside one transaction that also stores the consumer offsets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from loaders.base import POSITION, LoadBatch, Mode, Sink, TableBatch, latest_per_key
from loaders.duckdb.types import cast_expression, duckdb_type
from sluiceway.errors import SinkFatal, SinkUnavailable
from streaming.events import ColumnSchema

__all__ = ["DuckDBSink"]

OFFSETS = "_sluiceway_offsets"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return orjson.dumps(value).decode()
    return str(value)


class DuckDBSink(Sink):
    """Loads change events into a DuckDB database file."""

    name = "duckdb"

    def __init__(self, path: Path, schema: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = duckdb.connect(str(path))
        except duckdb.IOException as exc:
            raise SinkUnavailable(f"cannot open {path}: {exc}") from exc
        self.schema = schema
        self.conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_q(schema)}")
        self.conn.execute(
            f"CREATE TABLE IF NOT EXISTS {_q(schema)}.{OFFSETS} (grp VARCHAR, topic VARCHAR, "
            "part INTEGER, next_offset BIGINT, PRIMARY KEY (grp, topic, part))"
        )
        self._columns: dict[str, dict[str, str]] = {}

    def table_name(self, batch: TableBatch, history: bool = False) -> str:
        """The target table of a source table: ``<schema>.<table>`` (``__history``)."""
        schema, table = batch.table
        name = table if schema == "public" else f"{schema}_{table}"
        return f"{_q(self.schema)}.{_q(name + ('__history' if history else ''))}"

    # --- offsets ---------------------------------------------------------------------------
    def stored_offsets(self, group: str) -> dict[tuple[str, int], int]:
        rows = self.conn.execute(
            f"SELECT topic, part, next_offset FROM {_q(self.schema)}.{OFFSETS} WHERE grp = ?",
            [group],
        ).fetchall()
        return {(topic, part): offset for topic, part, offset in rows}

    def _store_offsets(self, batch: LoadBatch) -> None:
        rows = [(batch.group, t, p, o) for (t, p), o in batch.offsets.items()]
        if rows:
            self.conn.executemany(
                f"INSERT OR REPLACE INTO {_q(self.schema)}.{OFFSETS} VALUES (?, ?, ?, ?)", rows
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
                definition = [f"{_q(c.name)} {duckdb_type(c)}" for c in columns] + extra
                self.conn.execute(f"CREATE TABLE {name} ({', '.join(definition)})")
                known = {c.name: duckdb_type(c) for c in columns}
            self._columns[name] = known
        for column in columns:
            wanted = duckdb_type(column)
            if column.name not in known:
                # A new source column appears; columns the source dropped stay, nullable.
                self.conn.execute(f"ALTER TABLE {name} ADD COLUMN {_q(column.name)} {wanted}")
                known[column.name] = wanted
            elif known[column.name].upper() != wanted.upper():
                self._widen(name, column, known[column.name], wanted)
                known[column.name] = wanted

    def _widen(self, name: str, column: ColumnSchema, have: str, wanted: str) -> None:
        have_u, wanted_u = have.upper(), wanted.upper()
        integers = ["SMALLINT", "INTEGER", "BIGINT"]
        widens = (
            (have_u in integers and wanted_u in integers
             and integers.index(wanted_u) > integers.index(have_u))
            or (have_u, wanted_u) == ("REAL", "DOUBLE")
            or (have_u.startswith("DECIMAL") and wanted_u.startswith("DECIMAL"))
            or wanted_u == "VARCHAR"
        )  # fmt: skip
        if not widens:
            raise SinkFatal(
                f"{name}.{column.name}: the source changed its type from {have} to {wanted}, "
                "which would lose values here; migrate the column by hand, then resume"
            )
        self.conn.execute(f"ALTER TABLE {name} ALTER COLUMN {_q(column.name)} TYPE {wanted}")

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
        except Exception:
            self.conn.execute("ROLLBACK")
            raise

    def _stage(self, name: str, columns: list[ColumnSchema], changes: list[Any]) -> None:
        data: dict[str, list[Any]] = {c.name: [] for c in columns}
        ops, commits, lsns, unchanged, parts, offsets, stamps = [], [], [], [], [], [], []
        for change in changes:
            row = change.row or {}
            for column in columns:
                data[column.name].append(_text(row.get(column.name)))
            ops.append(change.op)
            commits.append(change.position[0])
            lsns.append(change.position[1])
            unchanged.append(change.unchanged)
            parts.append(change.partition)
            offsets.append(change.offset)
            stamps.append(change.ts_ms)
        arrays = {k: pa.array(v, pa.string()) for k, v in data.items()}
        arrays.update(
            {
                "__op": pa.array(ops, pa.string()),
                "__commit_lsn": pa.array(commits, pa.int64()),
                "__lsn": pa.array(lsns, pa.int64()),
                "__unchanged": pa.array(unchanged, pa.list_(pa.string())),
                "__partition": pa.array(parts, pa.int32()),
                "__offset": pa.array(offsets, pa.int64()),
                "__ts_ms": pa.array(stamps, pa.int64()),
            }
        )
        self.conn.register(name, pa.table(arrays))

    def _current(self, table: TableBatch) -> None:
        schema = table.schema
        if not schema.key:
            raise SinkFatal(
                f"{table.table[0]}.{table.table[1]} has no primary key: load it in history mode"
            )
        target = self.table_name(table)
        guard = target[:-1] + '__deletes"'
        columns = list(schema.columns)
        position = [f"{POSITION[0]} BIGINT", f"{POSITION[1]} BIGINT"]
        self._ensure(target, columns, position)
        key_columns = [c for c in columns if c.key]
        self._ensure(guard, key_columns, position)
        changes = latest_per_key(table.changes)
        if not changes:
            return
        self._stage("staged", columns, changes)
        keys = " AND ".join(
            f"{cast_expression(c, 's.' + _q(c.name))} = t.{_q(c.name)}" for c in key_columns
        )
        newer = (
            f"(s.__commit_lsn > t.{POSITION[0]} OR "
            f"(s.__commit_lsn = t.{POSITION[0]} AND s.__lsn > t.{POSITION[1]}))"
        )
        values = ", ".join(
            f"CASE WHEN list_contains(s.__unchanged, '{c.name.replace(chr(39), chr(39) * 2)}') "
            f"THEN t.{_q(c.name)} ELSE {cast_expression(c, 's.' + _q(c.name))} END"
            for c in columns
        )
        names = ", ".join(_q(c.name) for c in columns)
        key_names = ", ".join(_q(c.name) for c in key_columns)
        self.conn.execute(
            f"""CREATE OR REPLACE TEMP TABLE applied AS
            SELECT s.* FROM staged s
            WHERE NOT EXISTS (SELECT 1 FROM {target} t WHERE {keys} AND NOT {newer})
              AND NOT EXISTS (SELECT 1 FROM {guard} t WHERE {keys} AND NOT {newer})"""
        )
        self.conn.execute(
            f"""CREATE OR REPLACE TEMP TABLE upserts AS
            SELECT {values}, s.__commit_lsn, s.__lsn
            FROM applied s LEFT JOIN {target} t ON {keys} WHERE s.__op <> 'd'"""
        )
        self.conn.execute(
            f"DELETE FROM {target} t WHERE EXISTS (SELECT 1 FROM applied s WHERE {keys})"
        )
        self.conn.execute(
            f"DELETE FROM {guard} t WHERE EXISTS (SELECT 1 FROM applied s WHERE {keys})"
        )
        self.conn.execute(
            f"INSERT INTO {target} ({names}, {POSITION[0]}, {POSITION[1]}) SELECT * FROM upserts"
        )
        key_values = ", ".join(cast_expression(c, "s." + _q(c.name)) for c in key_columns)
        self.conn.execute(
            f"INSERT INTO {guard} ({key_names}, {POSITION[0]}, {POSITION[1]}) "
            f"SELECT {key_values}, s.__commit_lsn, s.__lsn FROM applied s WHERE s.__op = 'd'"
        )
        self.conn.unregister("staged")

    def _history(self, table: TableBatch) -> None:
        target = self.table_name(table, history=True)
        columns = list(table.schema.columns)
        extra = [
            "_sluiceway_op VARCHAR", f"{POSITION[0]} BIGINT", f"{POSITION[1]} BIGINT",
            "_sluiceway_ts_ms BIGINT", "_sluiceway_topic VARCHAR", "_sluiceway_partition INTEGER",
            "_sluiceway_offset BIGINT",
        ]  # fmt: skip
        self._ensure(target, columns, extra)
        changes = [c for c in table.changes if c.op != "t"]
        if not changes:
            return
        topic = changes[0].topic.replace("'", "''")
        self._stage("staged", columns, changes)
        values = ", ".join(cast_expression(c, "s." + _q(c.name)) for c in columns)
        names = ", ".join(_q(c.name) for c in columns)
        # Once per (topic, partition, offset): a replayed window adds nothing.
        self.conn.execute(
            f"""INSERT INTO {target} ({names}, _sluiceway_op, {POSITION[0]}, {POSITION[1]},
                _sluiceway_ts_ms, _sluiceway_topic, _sluiceway_partition, _sluiceway_offset)
            SELECT {values}, s.__op, s.__commit_lsn, s.__lsn, s.__ts_ms, '{topic}',
                s.__partition, s.__offset
            FROM staged s WHERE NOT EXISTS (
                SELECT 1 FROM {target} h WHERE h._sluiceway_topic = '{topic}'
                AND h._sluiceway_partition = s.__partition AND h._sluiceway_offset = s.__offset)"""
        )
        self.conn.unregister("staged")

    def close(self) -> None:
        self.conn.close()
