"""What capture needs from PostgreSQL's catalog: tables, keys, types, publication, slot.

Sluiceway manages the publication and the slot of each pipeline: it creates them when missing
(the publication from the pipeline's include/exclude patterns; ``FOR TABLES IN SCHEMA`` when a
whole schema is included, so new tables join by themselves), adds newly matching tables, and
never drops a slot unless asked to (`drop_slot`, which waits until the slot's consumer is gone).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from psycopg2 import sql

from sluiceway.errors import SourceFatal
from sluiceway.pipeline import TableSelection
from streaming.sources.postgres.pgtypes import PgType

__all__ = [
    "SlotHealth",
    "TableInfo",
    "drop_slot",
    "ensure_publication",
    "load_types",
    "matching_tables",
    "slot_health",
    "table_info",
]


@dataclass(frozen=True)
class TableInfo:
    """A captured table."""

    oid: int
    schema: str
    name: str
    key: tuple[str, ...]  # primary key columns in key order; () if the table has none
    estimated_rows: int

    @property
    def qualified(self) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(self.name))


@dataclass(frozen=True)
class SlotHealth:
    """How far the slot is behind, in bytes of WAL."""

    active: bool
    retained_bytes: int  # WAL kept for the slot (current LSN - restart_lsn)
    lag_bytes: int  # current LSN - confirmed_flush_lsn
    confirmed_flush_lsn: int


_TABLES = """
SELECT c.oid, n.nspname, c.relname,
       COALESCE((SELECT array_agg(a.attname ORDER BY k.ord)
                 FROM pg_index i
                 CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                 WHERE i.indrelid = c.oid AND i.indisprimary), '{}') AS key,
       GREATEST(c.reltuples, 0)::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'
"""


def _info(row: tuple[Any, ...]) -> TableInfo:
    return TableInfo(int(row[0]), row[1], row[2], tuple(row[3]), int(row[4]))


def matching_tables(conn: Any, selection: TableSelection) -> list[TableInfo]:
    """The tables the selection includes, ordered by schema and name."""
    with conn.cursor() as cur:
        cur.execute(_TABLES + " ORDER BY n.nspname, c.relname")
        rows = cur.fetchall()
    return [_info(r) for r in rows if selection.matches(r[1], r[2])]


def table_info(conn: Any, oid: int) -> TableInfo | None:
    """One table by OID (a table that joined the publication while streaming)."""
    with conn.cursor() as cur:
        cur.execute(_TABLES + " AND c.oid = %s", (oid,))
        row = cur.fetchone()
    return _info(row) if row else None


def load_types(conn: Any, oids: list[int] | None = None) -> list[PgType]:
    """pg_type rows: all of them, or those of ``oids``."""
    query = "SELECT oid, typname, typtype, typcategory, typelem, typbasetype, typdelim FROM pg_type"
    with conn.cursor() as cur:
        if oids is None:
            cur.execute(query)
        else:
            cur.execute(query + " WHERE oid = ANY(%s)", (oids,))
        return [PgType(int(r[0]), r[1], r[2], r[3], int(r[4]), int(r[5]), r[6]) for r in cur]


def _whole_schemas(selection: TableSelection) -> list[str] | None:
    """Schemas included whole ('s.*', no excludes): publish them FOR TABLES IN SCHEMA."""
    if selection.exclude:
        return None
    schemas = []
    for pattern in selection.include:
        schema, _, table = pattern.partition(".")
        if table != "*" or any(ch in schema for ch in "*?["):
            return None
        schemas.append(schema)
    return schemas


def ensure_publication(
    conn: Any, name: str, selection: TableSelection, *, replica_identity_full: bool = False
) -> list[TableInfo]:
    """Create or extend the publication; returns the captured tables.

    Raises:
        SourceFatal: no table matches, or the role may not create the publication.
    """
    tables = matching_tables(conn, selection)
    schemas = _whole_schemas(selection)
    if not tables and schemas is None:
        raise SourceFatal(
            f"no table matches include={selection.include} exclude={selection.exclude}; "
            "check the pipeline's source.tables"
        )
    with conn.cursor() as cur:
        cur.execute("SELECT puballtables FROM pg_publication WHERE pubname = %s", (name,))
        exists = cur.fetchone() is not None
        if schemas is not None and not exists:
            cur.execute(
                sql.SQL("CREATE PUBLICATION {} FOR TABLES IN SCHEMA {}").format(
                    sql.Identifier(name), sql.SQL(", ").join(map(sql.Identifier, schemas))
                )
            )
        elif schemas is None:
            cur.execute(
                "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s",
                (name,),
            )
            published = set(cur.fetchall())
            missing = [t for t in tables if (t.schema, t.name) not in published]
            if missing:
                verb = (
                    "ALTER PUBLICATION {} ADD TABLE {}"
                    if exists
                    else "CREATE PUBLICATION {} FOR TABLE {}"
                )
                cur.execute(
                    sql.SQL(verb).format(
                        sql.Identifier(name), sql.SQL(", ").join(t.qualified for t in missing)
                    )
                )
        if replica_identity_full:
            for table in tables:
                cur.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(table.qualified))
    conn.commit()
    return tables


def slot_health(conn: Any, slot: str) -> SlotHealth | None:
    """Retained WAL and lag of ``slot``, or None if it does not exist."""
    with conn.cursor() as cur:
        cur.execute(
            """
            SELECT active,
                   COALESCE(pg_current_wal_lsn() - restart_lsn, 0)::bigint,
                   COALESCE(pg_current_wal_lsn() - confirmed_flush_lsn, 0)::bigint,
                   COALESCE(confirmed_flush_lsn - '0/0'::pg_lsn, 0)::bigint
            FROM pg_replication_slots WHERE slot_name = %s
            """,
            (slot,),
        )
        row = cur.fetchone()
    conn.commit()
    return SlotHealth(bool(row[0]), int(row[1]), int(row[2]), int(row[3])) if row else None


def drop_slot(conn: Any, slot: str, timeout: float = 30.0) -> bool:
    """Drop ``slot`` once no consumer holds it; returns False if it did not exist."""
    deadline = time.monotonic() + timeout
    while True:
        health = slot_health(conn, slot)
        if health is None:
            return False
        if not health.active:
            break
        if time.monotonic() > deadline:
            raise SourceFatal(
                f"slot {slot} is still in use after {timeout:.0f}s; stop its consumer"
            )
        time.sleep(0.2)
    with conn.cursor() as cur:
        cur.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    conn.commit()
    return True
