"""PostgreSQL and MariaDB are configured for log-based capture."""

from __future__ import annotations

import psycopg2.extras
import pytest

from sluiceway.connect import mariadb_connection, postgres_connection
from sluiceway.settings import Settings
from stack.manager import Stack
from tests.integration.conftest import require

pytestmark = pytest.mark.integration


def test_postgres_logical_slot_over_replication_connection(
    settings: Settings, stack: Stack, unique: str
) -> None:
    require(stack, "postgres")
    repl = postgres_connection(
        settings.postgres, connection_factory=psycopg2.extras.LogicalReplicationConnection
    )
    check = postgres_connection(settings.postgres)
    check.autocommit = True
    try:
        with repl.cursor() as cur:
            cur.create_replication_slot(unique, output_plugin="pgoutput")
        with check.cursor() as cur:
            cur.execute(
                "SELECT plugin, slot_type FROM pg_replication_slots WHERE slot_name = %s", (unique,)
            )
            assert cur.fetchall() == [("pgoutput", "logical")]
        with repl.cursor() as cur:
            cur.drop_replication_slot(unique)
        with check.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (unique,))
            assert cur.fetchone() == (0,)
    finally:
        repl.close()
        check.close()


def test_postgres_is_ready_for_logical_decoding(settings: Settings, stack: Stack) -> None:
    require(stack, "postgres")
    conn = postgres_connection(settings.postgres)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW wal_level")
            assert cur.fetchone() == ("logical",)
            cur.execute("SELECT rolreplication FROM pg_roles WHERE rolname = current_user")
            assert cur.fetchone() == (True,)
    finally:
        conn.close()


def test_mariadb_writes_a_full_row_binlog(settings: Settings, stack: Stack) -> None:
    require(stack, "mariadb")
    conn = mariadb_connection(settings.mariadb)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT @@log_bin, @@binlog_format, @@binlog_row_image, @@server_id")
            assert cur.fetchone() == (1, "ROW", "FULL", settings.mariadb.server_id)
            cur.execute("SHOW MASTER STATUS")
            row = cur.fetchone()
            assert row is not None and row[0].startswith("mariadb-bin.")
    finally:
        conn.close()
