"""The Snowflake sink: PUT + COPY INTO a staging table, then the statements SQL targets share.

A batch is written as Parquet (every column as exact text), PUT to the staging table's stage
and loaded with COPY INTO (``write_pandas`` does not work against fakesnow's server), then
applied with the position-guarded statements of `loaders.sql`, with the offsets, in one
transaction. Those statements rather than one MERGE: they give the same guarantees, and
fakesnow cannot bind a MERGE source's columns inside function calls.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from snowflake.connector.constants import FIELD_ID_TO_NAME

from loaders.base import POSITION, LoadBatch, Mode, Sink, TableBatch
from loaders.snowflake.types import cast_expression, snowflake_type, spelled, widens
from loaders.sql import (
    HISTORY_COLUMNS,
    Dialect,
    Scd2Views,
    current_state,
    evolve,
    history,
    q,
    split_ddl,
)
from loaders.staging import Stager
from sluiceway.connect import snowflake_connection
from sluiceway.errors import SinkFatal, SinkUnavailable
from sluiceway.settings import SnowflakeSettings
from streaming.events import ColumnSchema

__all__ = ["SnowflakeSink"]

OFFSETS = "_sluiceway_offsets"
_SEPARATOR = "|"
# ``__unchanged`` as text: "|a|b|" (Snowflake's list membership is a LIKE on it)
_UNCHANGED = (
    f"'{_SEPARATOR}' || array_to_string(list_transform(__unchanged, "
    f"lambda c: c || '{_SEPARATOR}'), '')"
)

_DIALECT = Dialect(
    cast=cast_expression,
    contains=lambda items, literal: (
        f"CONTAINS({items}, CONCAT('{_SEPARATOR}', {literal}, '{_SEPARATOR}'))"
    ),
    temp_table=lambda name, select: [f"CREATE OR REPLACE TEMPORARY TABLE {name} AS {select}"],
    # (the CASE is for fakesnow, which turns a NULL into the epoch)
    from_ms=lambda ms: f"CASE WHEN {ms} IS NULL THEN NULL ELSE TO_TIMESTAMP_TZ({ms}, 3) END",
)
_HISTORY_TYPES = {
    "text": "VARCHAR", "bigint": "NUMBER(19,0)", "integer": "NUMBER(10,0)", "text[]": "VARCHAR",
}  # fmt: skip


class SnowflakeSink(Sink):
    """Loads change events into a Snowflake schema."""

    name = "snowflake"

    def __init__(self, settings: SnowflakeSettings, schema: str) -> None:
        try:
            self.conn = snowflake_connection(settings)
        except Exception as exc:  # the connector raises its own tree; all mean unreachable here
            raise SinkUnavailable(f"cannot connect to Snowflake: {type(exc).__name__}") from exc
        self.schema = schema
        cur = self.conn.cursor()
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {settings.database}")
        # Unquoted (Snowflake folds it to upper case): pipeline names are [a-z0-9_], and stage
        # references resolve against the folded name.
        cur.execute(f"CREATE SCHEMA IF NOT EXISTS {settings.database}.{schema}")
        cur.execute(f"USE DATABASE {settings.database}")
        cur.execute(f"USE SCHEMA {settings.database}.{schema}")
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {OFFSETS} (grp VARCHAR, topic VARCHAR, "
            "part NUMBER(10,0), next_offset NUMBER(19,0))"
        )
        self._columns: dict[str, dict[str, str]] = {}
        self._tmp = Path(tempfile.mkdtemp(prefix="sluiceway-snowflake-"))
        self.stager = Stager()
        self.views = Scd2Views(_DIALECT)

    def stored_offsets(self, group: str) -> dict[tuple[str, int], int]:
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT topic, part, MAX(next_offset) FROM {OFFSETS} WHERE grp = %s "
            "GROUP BY topic, part",
            (group,),
        )
        return {(t, int(p)): int(o) for t, p, o in cur.fetchall()}

    def _ensure(self, cur: Any, name: str, columns: list[ColumnSchema], extra: list[str]) -> None:
        known = self._columns.get(name)
        if known is None:
            definition = [f"{q(c.name)} {snowflake_type(c)}" for c in columns] + extra
            cur.execute(f"CREATE TABLE IF NOT EXISTS {name} ({', '.join(definition)})")
            cur.execute(f"SELECT * FROM {name} LIMIT 0")
            known = {
                d.name: spelled(FIELD_ID_TO_NAME[d.type_code], d.precision, d.scale)
                for d in cur.description
            }
            self._columns[name] = known
        statements = evolve(
            name,
            known,
            columns,
            snowflake_type,
            widening=widens,
            alter=lambda t, c, wanted: f"ALTER TABLE {t} ALTER COLUMN {c} SET DATA TYPE {wanted}",
        )
        for statement in statements:
            cur.execute(statement)

    def _stage(
        self, cur: Any, name: str, columns: list[ColumnSchema], table: TableBatch, latest: bool
    ) -> bool:
        """Stage the batch as table ``name`` by PUT and COPY INTO of Parquet; False if empty."""
        if not self.stager.stage(table, latest):
            return False
        text = ", ".join(f"{q(c.name)} VARCHAR" for c in columns)
        # The metadata columns are unquoted, as the shared statements name them (Snowflake
        # folds them to upper case); source columns keep their case, quoted.
        cur.execute(
            f"CREATE OR REPLACE TABLE {name} ({text}, __op VARCHAR, __commit_lsn NUMBER(20,0), "
            "__lsn NUMBER(20,0), __unchanged VARCHAR, __partition NUMBER(10,0), "
            "__offset NUMBER(19,0), __ts_ms NUMBER(19,0))"
        )
        path = self._tmp / f"{name}.parquet"
        self.stager.export(path, "parquet", _UNCHANGED)
        cur.execute(f"PUT file://{path} @%{name}")
        cur.execute(
            f"COPY INTO {name} FROM @%{name} FILE_FORMAT = (TYPE = PARQUET) "
            "MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE"
        )
        path.unlink()
        return True

    def prepare(self, batch: LoadBatch, mode: Mode) -> None:
        """Parse and stage the batch while the one before is written (`Stager.prepare`)."""
        self.stager.prepare(batch, mode)

    def write(self, batch: LoadBatch, mode: Mode) -> None:
        # Two phases: DDL and staging per table first, then one transaction holding only DML
        # and the offsets (DDL would commit implicitly in Snowflake, and fakesnow cannot run
        # it inside a transaction at all).
        cur = self.conn.cursor()
        dml: list[str] = []
        try:
            for number, table in enumerate(batch.tables.values()):
                if mode in ("current", "both"):
                    dml += self._current(cur, table, number)
                if mode in ("history", "both"):
                    dml += self._history(cur, table, number)
            cur.execute("BEGIN")
            for statement in dml:
                cur.execute(statement)
            for (topic, part), offset in batch.offsets.items():
                cur.execute(
                    f"INSERT INTO {OFFSETS} VALUES (%s, %s, %s, %s)",
                    (batch.group, topic, part, offset),
                )
            cur.execute("COMMIT")
        except SinkFatal:
            raise
        except Exception as exc:
            cur.execute("ROLLBACK")
            self.views.forget()
            raise SinkFatal(f"Snowflake refused the batch: {exc}"[:2000]) from exc
        finally:
            self.stager.finish()

    def _current(self, cur: Any, table: TableBatch, number: int) -> list[str]:
        columns = list(table.schema.columns)
        keys = table.key_columns()
        target, guard = q(table.target_name()), q(table.target_name("__deletes"))
        position = [f"{POSITION[0]} NUMBER(20,0)", f"{POSITION[1]} NUMBER(20,0)"]
        self._ensure(cur, target, columns, position)
        self._ensure(cur, guard, keys, position)
        staged = f"staged_c{number}"
        if not self._stage(cur, staged, columns, table, latest=True):
            return []
        statements = current_state(
            _DIALECT, target, guard, columns, staged, f"_{number}", unchanged=self.stager.unchanged
        )
        ddl, dml = split_ddl(statements)
        for statement in ddl:
            cur.execute(statement)
        return dml

    def _history(self, cur: Any, table: TableBatch, number: int) -> list[str]:
        columns = list(table.schema.columns)
        target = q(table.target_name("__history"))
        extra = [f"{n} {_HISTORY_TYPES[t]}" for n, t in HISTORY_COLUMNS]
        self._ensure(cur, target, columns, extra)
        staged = f"staged_h{number}"
        if not self._stage(cur, staged, columns, table, latest=False):
            return []
        topic = table.raw.topic if table.raw is not None else table.changes[0].topic
        view = self.views.statement(q(table.target_name("__scd2")), target, columns)
        if view is not None:
            cur.execute(view)
        return [history(_DIALECT, target, columns, staged, topic)]

    def close(self) -> None:
        self.conn.close()
        self.stager.close()
