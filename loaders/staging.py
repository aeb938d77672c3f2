"""Staging: a batch's changes as one table of exact text, built by DuckDB for every target.

Per-record Python is what bounds a loader (an envelope parsed into objects costs more than the
target's own write), so a batch's raw Kafka values go to DuckDB as one Arrow string column.
DuckDB parses each envelope once (``json_transform`` into a struct of strings: numbers keep
their exact text, nested values their JSON), keeps the newest change of each key when asked,
and leaves the temporary table ``staged``:

    <each source column as text>, __op, __commit_lsn, __lsn, __unchanged (list),
    __partition, __offset, __ts_ms

The few batches the engine cannot take — Connect JSON envelopes, and TOAST-unchanged columns
whose stored value a newer change of the key must carry over from an older one in the batch —
are parsed in Python (`loaders.sql.staged_values`) into the same table. Targets then apply
``staged`` with SQL in DuckDB itself, or export it in their own format: CSV for PostgreSQL's
COPY, NDJSON for a BigQuery load job, Parquet for Snowflake's PUT and for S3.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import duckdb
import orjson
import pyarrow as pa

from loaders.arrow import int_array, text_array
from loaders.base import LoadBatch, Mode, TableBatch, latest_per_key
from loaders.sql import staged_values
from sluiceway.errors import BadRecords
from streaming.events import TableSchema

__all__ = ["Prepared", "Stager", "latest_select", "raw_select"]

_STAGE_TYPES = {
    "__op": pa.string(), "__commit_lsn": pa.int64(), "__lsn": pa.int64(),
    "__unchanged": pa.list_(pa.string()), "__partition": pa.int32(), "__offset": pa.int64(),
    "__ts_ms": pa.int64(),
}  # fmt: skip

# The staged records the engine could not take: not change events first.
_CHECK = (
    "SELECT __partition, __offset, __python FROM staged WHERE __op IS NULL OR __python "
    "ORDER BY __python, __partition, __offset"
)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def raw_select(schema: TableSchema, raw: str) -> str:
    """SQL turning raw envelopes (``raw``: ``__partition``, ``__offset``, ``__value``) into the
    staged shape, every change of the batch. A record that is not a change event stays in with
    a NULL ``__op``, and ``__python`` marks the records the Python path must take.

    The parsed envelopes are a materialized CTE: referenced once per column, a plain subquery
    had DuckDB run ``json_transform`` more than once per record (100k envelopes of 5 columns:
    176 ms against 108 ms)."""
    columns = schema.columns
    row = {c.name: "VARCHAR" for c in columns}
    structure = {
        "op": "VARCHAR",
        "ts_ms": "BIGINT",
        "source": {"commit_lsn": "BIGINT", "lsn": "BIGINT", "ts_ms": "BIGINT"},
        "after": row,
        "before": row,
        "unchanged": "VARCHAR",
        "schema": "VARCHAR",  # only a Connect JSON envelope has it at the top
    }
    spec = orjson.dumps(structure).decode().replace("'", "''")
    values = ", ".join(
        f"CASE WHEN x.op = 'd' THEN x.before.{_quote(c.name)} "
        f"ELSE x.after.{_quote(c.name)} END AS {_quote(c.name)}"
        for c in columns
    )
    return (
        "WITH parsed AS MATERIALIZED (SELECT __partition, __offset, "
        f"json_transform(__value, '{spec}') AS x FROM {raw}) "
        f"SELECT {values}, x.op AS __op, COALESCE(x.source.commit_lsn, 0) AS __commit_lsn, "
        "COALESCE(x.source.lsn, 0) AS __lsn, CAST([] AS VARCHAR[]) AS __unchanged, "
        "__partition, __offset, COALESCE(x.source.ts_ms, x.ts_ms, 0) AS __ts_ms, "
        'x.unchanged IS NOT NULL OR x."schema" IS NOT NULL AS __python '
        "FROM parsed WHERE x.op IS DISTINCT FROM 't'"
    )


def _keys(schema: TableSchema) -> str:
    return ", ".join(_quote(c.name) for c in schema.columns if c.key)


def latest_select(schema: TableSchema, staged: str) -> str:
    """SQL keeping only the newest change of each key of ``staged``, by position."""
    return (
        f"SELECT * FROM {staged} QUALIFY row_number() OVER (PARTITION BY {_keys(schema)} "
        "ORDER BY __commit_lsn DESC, __lsn DESC, __partition DESC, __offset DESC) = 1"
    )


def _text(values: list[bytes]) -> pa.Array | None:
    """Kafka values as one Arrow string array, or None where one is not UTF-8 (the Python path
    then names it). Built as binary and cast: the cast checks UTF-8 in one pass over the
    buffer, where converting each value to a string does it per object (100k envelopes: 11 ms
    against 89 ms, all of it holding the GIL the reading thread needs)."""
    try:
        return text_array(values)
    except pa.ArrowInvalid:
        return None


@dataclass
class Prepared:
    """A table batch staged ahead of its write (`Stager.prepare`), and what the sink's
    ``export`` made of it there."""

    latest: bool
    rows: pa.Table
    unchanged: bool
    export: Any = None


class Stager:
    """Builds ``staged`` in a DuckDB connection: the target's own (DuckDB) or an in-memory one
    (of ``threads`` threads, or as many as there are cores)."""

    def __init__(
        self, conn: duckdb.DuckDBPyConnection | None = None, threads: int | None = None
    ) -> None:
        self._own = conn is None
        config: dict[str, str | bool | int | float | list[str]] = {}
        if threads is not None:
            config["threads"] = threads
        self.conn = duckdb.connect(":memory:", config=config) if conn is None else conn
        self.unchanged = False  # whether a change last staged has TOAST-unchanged columns
        self.exported: Any = None  # the ``export`` of the prepared batch last staged, if any
        self._registered = False  # whether ``staged`` is a prepared Arrow table, registered
        self._rows: pa.Table | None = None  # ``staged`` as Arrow, once `rows` made it
        self._ahead: Stager | None = None  # stages for `prepare`, made on first use

    def prepare(
        self,
        batch: LoadBatch,
        mode: Mode,
        export: Callable[[Stager, TableBatch], Any] | None = None,
    ) -> None:
        """Stage each table of ``batch`` ahead of its write, for a sink's `Sink.prepare`: on
        the caller's thread, in an in-memory instance of one thread of its own, keeping the
        result on the table for `stage` to take as staged — the newest change per key for
        current state, every change for history. ``export(stager, table)`` runs there too, on
        each staged table (`exported` hands it back). What cannot be staged is left for `stage`,
        whose error then names it; a batch for both modes too, staged once per mode."""
        if mode == "both":
            return
        if self._ahead is None:
            self._ahead = Stager(threads=1)
        ahead, latest = self._ahead, mode == "current"
        for table in batch.tables.values():
            table.prepared = None
            try:
                count = ahead.stage(table, latest)
                made = export(ahead, table) if export is not None and count else None
            except (BadRecords, duckdb.Error):
                continue
            table.prepared = Prepared(latest, ahead.rows(), ahead.unchanged, made)

    def stage(self, table: TableBatch, latest: bool) -> int:
        """Stage ``table``'s changes (only the newest per key if ``latest``); the row count.

        Raises:
            BadRecords: naming the records that are not change events.
        """
        if self._registered:
            self.conn.unregister("staged")
            self._registered = False
        self._rows = None
        prepared = table.prepared
        if isinstance(prepared, Prepared) and prepared.latest == latest:
            # Read in place: a copy into a table cost half of what parsing had (50 ms/100k).
            self.conn.execute("DROP TABLE IF EXISTS temp.main.staged")
            self.conn.register("staged", prepared.rows)
            self._registered = True
            self._rows = prepared.rows
            self.unchanged, self.exported = prepared.unchanged, prepared.export
            return int(prepared.rows.num_rows)
        self.exported = None
        self.unchanged = False  # the bulk path hands changes with any to the Python path
        raw = table.raw
        values = None if raw is None or raw.parse_in_python else _text(raw.values)
        if raw is not None and values is not None:
            self.conn.register(
                "raw",
                pa.table(
                    {
                        "__partition": int_array(raw.partitions, pa.int32()),
                        "__offset": int_array(raw.offsets, pa.int64()),
                        "__value": values,
                    }
                ),
            )
            try:
                self.conn.execute(
                    "CREATE OR REPLACE TEMP TABLE staged AS " + raw_select(table.schema, "raw")
                )
                parsed = True
            except duckdb.Error:
                # Bytes that are not JSON: Python names the records (`TableBatch.parsed`).
                parsed = False
            with contextlib.suppress(duckdb.Error):  # in an aborted transaction
                self.conn.unregister("raw")
            if parsed:
                found = self.conn.execute(_CHECK).fetchall()
                if not found:
                    self.conn.execute("ALTER TABLE staged DROP COLUMN __python")
                    return self._newest(table.schema) if latest else self._count()
                bad = [
                    (raw.topic, p, o, "not a change event") for p, o, python in found if not python
                ]
                if bad:
                    raise BadRecords(bad)
        changes = [c for c in table.parsed() if c.op != "t"]
        if latest:
            changes = latest_per_key(changes)
        self.unchanged = any(c.unchanged for c in changes)
        values = staged_values(list(table.schema.columns), changes)
        arrays = {k: pa.array(v, _STAGE_TYPES.get(k, pa.string())) for k, v in values.items()}
        self.conn.register("parsed", pa.table(arrays))
        self.conn.execute("CREATE OR REPLACE TEMP TABLE staged AS SELECT * FROM parsed")
        self.conn.unregister("parsed")
        return len(changes)

    def _count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM staged").fetchall()[0][0])

    def _newest(self, schema: TableSchema) -> int:
        """Keep the newest change of each key in ``staged``; the row count. Most batches
        change each key once (a snapshot, inserts, a replay of them): the window runs only
        where a key repeats (a 100k-row batch: 4 ms to check against 58 ms to rank)."""
        keys = _keys(schema)
        rows, distinct = self.conn.execute(
            f"SELECT count(*), count(DISTINCT ({keys})) FROM staged"
        ).fetchall()[0]
        if rows == distinct:
            return int(rows)
        self.conn.execute(
            "CREATE OR REPLACE TEMP TABLE staged AS " + latest_select(schema, "staged")
        )
        return self._count()

    def rows(self) -> pa.Table:
        """``staged`` as Arrow, exported once per staging (an export made while preparing
        and the prepared table share it)."""
        if self._rows is None:
            self._rows = self.conn.sql("SELECT * FROM staged").to_arrow_table()
        return self._rows

    def arrow(self, unchanged: str = "__unchanged") -> pa.Table:
        """``staged`` as Arrow, with ``__unchanged`` replaced by the SQL expression given."""
        return self.conn.sql(
            f"SELECT * REPLACE ({unchanged} AS __unchanged) FROM staged"
        ).to_arrow_table()

    def export(
        self, path: Path, kind: Literal["json", "parquet"], unchanged: str = "__unchanged"
    ) -> None:
        """Write ``staged`` to a file (newline-delimited JSON or Parquet)."""
        self.conn.execute(
            f"COPY (SELECT * REPLACE ({unchanged} AS __unchanged) FROM staged) TO "
            f"'{str(path).replace(chr(39), chr(39) * 2)}' (FORMAT {kind})"
        )

    def query(self, sql: str) -> list[Any]:
        return self.conn.execute(sql).fetchall()

    def close(self) -> None:
        if self._own:
            self.conn.close()
        if self._ahead is not None:
            self._ahead.close()
