"""Staging: a batch's changes as one table of exact text, built by DuckDB for every target.

Per-record Python is what bounds a loader (an envelope parsed into objects costs more than the
target's own write), so a batch's raw Kafka values go to DuckDB as one newline-delimited JSON
file (`loaders.feed`). DuckDB parses each envelope once (``read_json`` into a struct of
strings: numbers keep their exact text, nested values their JSON), keeps the newest change of
each key when asked, and leaves ``staged``:

    <each source column as text>, __op, __commit_lsn, __lsn, __unchanged (list),
    __partition, __offset, __ts_ms

A record's partition and offset come from its line: the parsed table keeps the file's order
(``preserve_insertion_order``), so its ``rowid`` less the first is the record's index in the
batch (row ids start at 0, or far above in a transaction's own storage), and the batch's runs
of consecutive offsets (mostly one per partition) turn indexes into places
(`loaders.feed.place_select`) as the staged rows are written — no list of every offset
crosses into DuckDB. ``staged`` is a view of that table.

The few batches the engine cannot take — Connect JSON envelopes, and TOAST-unchanged columns
whose stored value a newer change of the key must carry over from an older one in the batch —
are parsed in Python (`loaders.sql.staged_values`) and fed to the same table. Targets then
apply ``staged`` with SQL in DuckDB itself, or export it in their own format: CSV for
PostgreSQL's COPY, NDJSON for a BigQuery load job, Parquet for Snowflake's PUT and for S3.

Preparing (`Stager.prepare`) stages a batch ahead of its write on a second connection to the
same DuckDB instance, into a table of an in-memory database attached for the purpose
(`STAGING`); the write reads that table in place and `Stager.finish` drops it. Nothing crosses
between engines, and neither the DuckDB nor the PostgreSQL loader imports pyarrow.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import duckdb
import orjson

from loaders.base import LoadBatch, Mode, TableBatch, latest_per_key
from loaders.feed import Feed, check_select, envelope, parse_select, place_select, read_sql, runs
from loaders.sql import literal, q, staged_values
from sluiceway.errors import BadRecords
from streaming.events import TableSchema

__all__ = ["STAGING", "Prepared", "Stager"]

STAGING = "sluiceway_staging"
"""The in-memory database, attached to a stager's instance, that holds prepared batches."""

_META_TYPES = {
    "__op": "VARCHAR", "__commit_lsn": "BIGINT", "__lsn": "BIGINT", "__unchanged": "VARCHAR[]",
    "__partition": "INTEGER", "__offset": "BIGINT", "__ts_ms": "BIGINT",
}  # fmt: skip


def _keys(schema: TableSchema) -> str:
    return ", ".join(q(c.name) for c in schema.columns if c.key)


def _names(into: str | None) -> tuple[str, str]:
    """The tables one staging makes: the records as parsed, then the staged rows; in
    `STAGING` after ``into``, or temporary."""
    if into is None:
        return "temp.main.__parsed", "temp.main.__staged"
    return f"{into}_parsed", into


def _create(name: str) -> str:
    if name.startswith("temp.main."):  # a temporary table is made without its catalog
        return f"CREATE OR REPLACE TEMP TABLE {name.removeprefix('temp.main.')} AS "
    return f"CREATE OR REPLACE TABLE {name} AS "


@dataclass
class Prepared:
    """A table batch staged ahead of its write (`Stager.prepare`): the tables holding it, the
    query ``staged`` is a view of, and what the sink's ``export`` made of it there."""

    latest: bool
    tables: list[str]  # emptied once `Stager.finish` dropped them
    select: str
    count: int
    unchanged: bool
    export: Any = None
    owner: object = None  # the token of the stager whose instance holds the tables
    taken: bool = False  # staged by a write


@dataclass
class _Staged:
    """What one staging made: the rows, the query ``staged`` is a view of, and the tables
    that query reads."""

    count: int
    select: str
    tables: list[str]


class Stager:
    """Builds ``staged`` in a DuckDB connection: the target's own (DuckDB) or an in-memory one
    (of ``threads`` threads, or as many as there are cores). ``transactional``: the caller
    stages inside transactions of its own (a DuckDB target), which an error would abort.

    ``staged`` is always a view: of the rows as parsed, with each record's place worked out
    from its row number, so that they are materialized once."""

    def __init__(
        self,
        conn: duckdb.DuckDBPyConnection | None = None,
        threads: int | None = None,
        *,
        transactional: bool = False,
    ) -> None:
        self._own = conn is None
        self.transactional = transactional
        config: dict[str, str | bool | int | float | list[str]] = {}
        if threads is not None:
            config["threads"] = threads
        self.conn = duckdb.connect(":memory:", config=config) if conn is None else conn
        self.unchanged = False  # whether a change last staged has TOAST-unchanged columns
        self.exported: Any = None  # the ``export`` of the prepared batch last staged, if any
        self._view = False  # whether the view ``staged`` exists
        self._feed: Feed | None = None
        self._ahead: Stager | None = None  # stages for `prepare`, made on first use
        self._made: list[Prepared] = []  # by `prepare`, oldest first, until `finish` drops them
        self._lock = threading.Lock()
        self._names = itertools.count()
        self._token = object()  # unique while a prepared batch holds it, unlike id(self)

    # --- ahead of the write -------------------------------------------------------------------
    def prepare(
        self,
        batch: LoadBatch,
        mode: Mode,
        export: Callable[[Stager, TableBatch], Any] | None = None,
    ) -> None:
        """Stage each table of ``batch`` ahead of its write, for a sink's `Sink.prepare`: on
        the caller's thread, through a connection of its own to this stager's instance, into
        tables of `STAGING` that `stage` then reads in place — the newest change per key for
        current state, every change for history. ``export(stager, table)`` runs there too, on
        each staged table (`exported` hands it back). What cannot be staged is left for `stage`,
        whose error then names it; a batch for both modes too, staged once per mode."""
        if mode == "both":
            return
        if self._ahead is None:
            self.conn.execute(f"ATTACH IF NOT EXISTS ':memory:' AS {STAGING}")
            self._ahead = Stager(self.conn.cursor())
            self._ahead._own = True  # its own connection (a cursor) to this instance
        ahead, latest = self._ahead, mode == "current"
        for table in batch.tables.values():
            table.prepared = None
            name = f"{STAGING}.main.batch_{next(self._names)}"
            try:
                staged = ahead._build(table, latest, name)
                made = export(ahead, table) if export is not None and staged.count else None
            except (BadRecords, duckdb.Error):
                ahead._drop(list(_names(name)))
                continue
            prepared = Prepared(
                latest, staged.tables, staged.select, staged.count, ahead.unchanged, made
            )
            prepared.owner = self._token
            with self._lock:
                self._made.append(prepared)
            table.prepared = prepared

    def finish(self) -> None:
        """The write is over: drop the tables prepared for it, and those prepared before them
        that no write took (a mode they were not prepared for). Call outside the write's
        transaction: a DuckDB transaction writes to one database only."""
        self._drop_staged()
        self._drop(list(_names(None)))  # what the write staged itself, if anything
        with self._lock:
            taken = [i for i, p in enumerate(self._made) if p.taken]
            if not taken:
                return
            done, self._made = self._made[: taken[-1] + 1], self._made[taken[-1] + 1 :]
        for prepared in done:
            self._drop(prepared.tables)
            prepared.tables = []

    def _drop(self, tables: list[str]) -> None:
        for name in tables:
            self.conn.execute(f"DROP TABLE IF EXISTS {name}")

    # --- staging ----------------------------------------------------------------------------
    def stage(self, table: TableBatch, latest: bool) -> int:
        """Stage ``table``'s changes (only the newest per key if ``latest``); the row count.

        Raises:
            BadRecords: naming the records that are not change events.
        """
        self._drop_staged()
        prepared = table.prepared
        if (
            isinstance(prepared, Prepared)
            and prepared.latest == latest
            and prepared.tables
            and prepared.owner is self._token
        ):
            self._show(prepared.select)
            prepared.taken = True
            self.unchanged, self.exported = prepared.unchanged, prepared.export
            return prepared.count
        self.exported = None
        return self._build(table, latest).count

    def _drop_staged(self) -> None:
        if self._view:
            self.conn.execute("DROP VIEW IF EXISTS temp.main.staged")
            self._view = False

    def _show(self, select: str) -> None:
        """``staged`` as a view of ``select``."""
        self._drop_staged()
        self.conn.execute(f"CREATE OR REPLACE TEMP VIEW staged AS {select}")
        self._view = True

    def _build(self, table: TableBatch, latest: bool, into: str | None = None) -> _Staged:
        """Stage into a table named ``into`` (in `STAGING`), or a temporary one, and show it
        as ``staged``. The rows are placed (`place_select`) as they are written, once: the
        write reads them as they are (a view that placed them as it was read cost the
        DuckDB target's write ~0.6 s more per 1M rows)."""
        parsed, final = _names(into)
        self._drop_staged()
        self.unchanged = False  # the bulk path hands changes with any to the Python path
        found = self._bulk(table, parsed, latest)
        if found is None:
            count = self._python(table, latest, final)
        else:
            count, placed = found
            if count < 0:  # a key repeats: keep its newest change
                self.conn.execute(
                    f"{_create(final)}{placed} QUALIFY row_number() OVER (PARTITION BY "
                    f"{_keys(table.schema)} ORDER BY __commit_lsn DESC, __lsn DESC, "
                    "__partition DESC, __offset DESC) = 1"
                )
                (count,) = self.conn.execute(f"SELECT count(*) FROM {final}").fetchall()[0]
            else:
                self.conn.execute(_create(final) + placed)
            self._drop([parsed])
        select = f"SELECT * FROM {final}"
        self._show(select)
        return _Staged(count, select, [final])

    def _bulk(self, table: TableBatch, parsed: str, latest: bool) -> tuple[int, str] | None:
        """Parse the raw values in DuckDB into ``parsed``: the rows to stage (negative where
        ``latest`` needs the newest-per-key window) and the query placing them; None for the
        Python path.

        Raises:
            BadRecords: naming the records that are not change events.
        """
        raw = table.raw
        if raw is None or raw.parse_in_python:
            return None
        feed = self._feed_of()
        if not feed.lines(raw.values):
            return None
        columns = envelope(table.schema)
        try:
            for lenient in (self.transactional, True):
                # Strict is faster (20k envelopes: ~20 ms against ~30); lenient names what
                # is not a change event without an error, which would abort a transaction.
                try:
                    self.conn.execute(
                        _create(parsed)
                        + parse_select(table.schema, read_sql(feed, columns, lenient=lenient))
                    )
                    break
                except duckdb.Error:
                    if lenient:
                        return None
        finally:
            feed.clear()
        check = check_select(table.schema, parsed, latest)
        rows, first, last, bad, python, count, keys = self.conn.execute(check).fetchall()[0]
        if rows != len(raw.values) or last - first + 1 != rows:
            self._drop([parsed])  # a blank line was skipped: not one record per line
            return None
        if bad:
            self._drop([parsed])
            places = sorted((raw.partitions[i - first], raw.offsets[i - first]) for i in bad)
            raise BadRecords([(raw.topic, p, o, "not a change event") for p, o in places])
        if python:  # Connect JSON, or TOAST-unchanged values to carry over
            self._drop([parsed])
            return None
        placed = place_select(table.schema, parsed, runs(raw.partitions, raw.offsets), first)
        return -1 if latest and keys != count else count, placed

    def _python(self, table: TableBatch, latest: bool, final: str) -> int:
        """Parse in Python (`TableBatch.parsed`) and feed the staged rows to DuckDB."""
        changes = [c for c in table.parsed() if c.op != "t"]
        if latest:
            changes = latest_per_key(changes)
        self.unchanged = any(c.unchanged for c in changes)
        values = staged_values(list(table.schema.columns), changes)
        types = {name: _META_TYPES.get(name, "VARCHAR") for name in values}
        names = list(values)
        rows = [
            orjson.dumps(dict(zip(names, row, strict=True)))
            for row in zip(*values.values(), strict=True)
        ]
        feed = self._feed_of()
        if feed.lines(rows):
            try:
                self.conn.execute(_create(final) + "SELECT * FROM " + read_sql(feed, types))
            finally:
                feed.clear()
        else:  # no change left (truncations only)
            nulls = ", ".join(f"NULL::{kind} AS {q(name)}" for name, kind in types.items())
            self.conn.execute(_create(final) + f"SELECT {nulls} WHERE false")
        return len(changes)

    def _feed_of(self) -> Feed:
        if self._feed is None:
            self._feed = Feed()
        return self._feed

    # --- reading what is staged ---------------------------------------------------------------
    def csv(self, select: str) -> bytes:
        """The rows of ``select`` (a query of ``staged``) as CSV, no header: NULL an empty
        field, an empty string ``""``, a value quoted where it holds a comma, quote or line
        break. DuckDB writes it into this stager's feed file, read back whole. (A row of one
        column could be PostgreSQL's end marker ``\\.`` unquoted: select two or more.)"""
        feed = self._feed_of()
        try:
            self.conn.execute(
                f"COPY ({select}) TO {literal(feed.path)} "
                "(FORMAT csv, HEADER false, USE_TMP_FILE false)"
            )
            return feed.read()
        finally:
            feed.clear()

    def export(
        self, path: Path, kind: Literal["json", "parquet"], unchanged: str = "__unchanged"
    ) -> None:
        """Write ``staged`` to a file (newline-delimited JSON or Parquet)."""
        self.conn.execute(
            f"COPY (SELECT * REPLACE ({unchanged} AS __unchanged) FROM staged) TO "
            f"{literal(str(path))} (FORMAT {kind})"
        )

    def query(self, sql: str) -> list[Any]:
        return self.conn.execute(sql).fetchall()

    def close(self) -> None:
        if self._ahead is not None:
            self._ahead.close()
        if self._feed is not None:
            self._feed.close()
            self._feed = None
        if self._own:
            self.conn.close()
