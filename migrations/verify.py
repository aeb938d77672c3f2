"""Verification: does the target hold exactly the source's rows, table by table?

Both sides are read as streams and turned into the event encoding every source shares
(`streaming.sources.values`: exact decimals as text, timestamps in UTC, bytes in base64, ...) —
the source through the same converters capture uses, the target from its PostgreSQL values by
logical type — so a row that arrived intact compares equal whatever each driver returns.
`loaders.parity.compare` then counts and checksums them per key range and names the keys that
differ.
"""

from __future__ import annotations

import multiprocessing
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from functools import partial
from typing import Any

import pymysql.cursors

from loaders.parity import ParityReport, canonical, compare
from loaders.sql import q
from migrations.plan import MigrationPlan
from migrations.schema import SourceTable, read_mysql_tables, read_postgres_tables
from sluiceway.connect import mariadb_connection, postgres_connection
from sluiceway.settings import Settings
from streaming.events import ColumnSchema
from streaming.sources.mysql.types import column_converter
from streaming.sources.values import Converter, converter

__all__ = ["source_tables", "verifier", "verify"]

Row = tuple[Any, ...]


def source_tables(settings: Settings, plan: MigrationPlan) -> list[SourceTable]:
    """The plan's tables as the source's catalog describes them now."""
    if plan.source.kind == "postgres":
        pg = postgres_connection(settings.postgres, database=plan.source.database)
        try:
            return read_postgres_tables(pg, plan)
        finally:
            pg.close()
    conn = mariadb_connection(settings.mariadb, database=plan.source.database)
    try:
        return read_mysql_tables(conn, plan)
    finally:
        conn.close()


def _json_canonical(columns: list[ColumnSchema], converters: list[Converter]) -> list[Converter]:
    """JSON columns compare parsed (key order and spacing differ between engines); every other
    value compares in the event encoding as it is."""

    def parsed(convert: Converter) -> Converter:
        return lambda value: canonical(convert(value))

    return [parsed(f) if c.type == "json" else f for c, f in zip(columns, converters, strict=True)]


def _converted(
    rows: Iterable[tuple[Any, ...]], converters: list[Converter], keys: list[int]
) -> Iterator[tuple[Row, Row]]:
    for raw in rows:
        row = tuple(None if v is None else f(v) for f, v in zip(converters, raw, strict=True))
        yield tuple(row[i] for i in keys), row


def _source_rows(
    settings: Settings, plan: MigrationPlan, table: SourceTable
) -> Iterator[tuple[Row, Row]]:
    keys = [i for i, c in enumerate(table.logical) if c.key]
    if plan.source.kind == "postgres":
        qualified = f"{q(table.schema)}.{q(table.name)}"
        yield from _postgres_rows(settings, plan.source.database, qualified, table, keys)
        return
    converters = _json_canonical(
        table.logical, [column_converter(c, "null") for c in table.columns]
    )
    conn = mariadb_connection(
        settings.mariadb,
        database=plan.source.database,
        cursorclass=pymysql.cursors.SSCursor,
        init_command="SET SESSION time_zone = '+00:00'",
    )
    names = ", ".join(f"`{n.replace('`', '``')}`" for n in table.names)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT {names} FROM `{table.name}`")
            yield from _converted(cur, converters, keys)
    finally:
        conn.close()


def _postgres_rows(
    settings: Settings, database: str, qualified: str, table: SourceTable, keys: list[int]
) -> Iterator[tuple[Row, Row]]:
    converters = _json_canonical(table.logical, [converter(c) for c in table.logical])
    conn = postgres_connection(settings.postgres, database=database)
    names = ", ".join(q(n) for n in table.names)
    try:
        with conn.cursor(name=f"verify_{uuid.uuid4().hex[:8]}") as cur:
            cur.itersize = 10_000
            cur.execute(f"SELECT {names} FROM {qualified}")
            yield from _converted(cur, converters, keys)
    finally:
        conn.close()


def _target_rows(
    settings: Settings, plan: MigrationPlan, table: SourceTable
) -> Iterator[tuple[Row, Row]]:
    keys = [i for i, c in enumerate(table.logical) if c.key]
    target = f"{q(plan.target.schema_name)}.{q(plan.target_table(table.name))}"
    yield from _postgres_rows(settings, plan.target.database, target, table, keys)


def verify(
    settings: Settings, plan: MigrationPlan, executor: Executor | None = None
) -> list[ParityReport]:
    """One report per table: counts and checksums per key range, differing keys named.

    The two sides are read in two threads, or by ``executor`` (a process pool: see
    `verifier`)."""
    reports = []
    for table in source_tables(settings, plan):
        reports.append(
            compare(
                f"{table.schema}.{table.name}",
                partial(_source_rows, settings, plan, table),
                partial(_target_rows, settings, plan, table),
                show=10_000,
                canonical_form=None,  # both sides are in the event encoding, JSON parsed
                parallel=True,
                executor=executor,
            )
        )
    return reports


def verifier() -> ProcessPoolExecutor:
    """Two processes that read the two sides of a verification at once, each on a core (in
    threads, both sides' row decoding and conversions share one interpreter lock). They start
    at the first verification given them, in about a second (each imports what a side needs):
    the caller keeps them across the verifications that must not wait for that (a cutover's
    gate, then the one inside its fence)."""
    return ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn"))
