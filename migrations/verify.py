"""Verification: does the target hold exactly the source's rows, table by table?

Both sides are read as streams and turned into the event encoding every source shares
(`streaming.sources.values`: exact decimals as text, timestamps in UTC, bytes in base64, ...) —
the source through the same converters capture uses, the target from its PostgreSQL values by
logical type — so a row that arrived intact compares equal whatever each driver returns.
`loaders.parity.compare` then counts and checksums them per key range and names the keys that
differ.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import pymysql.cursors

from loaders.parity import ParityReport, canonical, compare
from loaders.sql import q
from migrations.plan import MigrationPlan
from migrations.schema import SourceTable, read_mysql_tables, read_postgres_tables
from sluiceway.connect import mariadb_connection, postgres_connection
from sluiceway.settings import Settings
from streaming.sources.mysql.types import column_converter
from streaming.sources.values import converter

__all__ = ["source_tables", "verify"]

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


def _converted(
    rows: Iterable[tuple[Any, ...]], converters: list[Any], keys: list[int]
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
    converters = [column_converter(c, "null") for c in table.columns]
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
    converters = [converter(c) for c in table.logical]
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


def _encoded(value: Any) -> Any:
    """Event-encoded values compare as they are, except JSON text (parsed: key order and
    spacing differ between engines)."""
    if isinstance(value, str) and value[:1] in ("{", "["):
        return canonical(value)
    return value


def verify(settings: Settings, plan: MigrationPlan) -> list[ParityReport]:
    """One report per table: counts and checksums per key range, differing keys named."""
    reports = []
    for table in source_tables(settings, plan):

        def source(t: SourceTable = table) -> Iterator[tuple[Row, Row]]:
            return _source_rows(settings, plan, t)

        def target(t: SourceTable = table) -> Iterator[tuple[Row, Row]]:
            return _target_rows(settings, plan, t)

        reports.append(
            compare(
                f"{table.schema}.{table.name}",
                source,
                target,
                show=10_000,
                canonical_form=_encoded,  # both sides are already in the event encoding
                parallel=True,
            )
        )
    return reports
