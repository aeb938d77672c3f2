"""Log-based capture from the real PostgreSQL into the real Kafka, reconciled row for row."""

from __future__ import annotations

import random
import threading
import time
from decimal import Decimal
from typing import Any

import orjson
import pytest
from psycopg2 import sql

from sluiceway.settings import Settings
from stack.manager import Stack
from streaming.sources.postgres.catalog import table_info
from streaming.sources.postgres.pgtypes import JSON_IN_SERVER
from streaming.sources.postgres.snapshot import BLOCK_BYTES, Chunk, json_query
from tests.integration.capture_support import (
    capture_running,
    make_pipeline,
    read_topic,
    rebuild_state,
    temporary_database,
    wait_caught_up,
)
from tests.integration.conftest import require

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _source_rows(conn: Any, table: str) -> dict[str, dict[str, Any]]:
    with conn.cursor() as cur:
        cur.execute(f"SELECT id, name, amount, note FROM {table}")
        return {
            orjson.dumps({"id": r[0]}).decode(): {
                "id": r[0],
                "name": r[1],
                "amount": None if r[2] is None else str(r[2]),
                "note": r[3],
            }
            for r in cur.fetchall()
        }


def _workload(conn: Any, table: str, transactions: int, seed: int) -> None:
    rng = random.Random(seed)
    with conn.cursor() as cur:
        for _ in range(transactions):
            cur.execute("BEGIN")
            for _ in range(rng.randint(1, 5)):
                key = rng.randint(1, 3000)
                action = rng.random()
                if action < 0.5:
                    cur.execute(
                        f"INSERT INTO {table} VALUES (%s, %s, %s, %s) ON CONFLICT (id) DO UPDATE "
                        "SET name = EXCLUDED.name, amount = EXCLUDED.amount",
                        (key, f"n{rng.random()}", Decimal(rng.randint(0, 10**9)) / 1000, None),
                    )
                elif action < 0.8:
                    cur.execute(
                        f"UPDATE {table} SET amount = amount + 0.001, note = %s WHERE id = %s",
                        (rng.choice(["", None, "ünïcødé ✓"]), key),
                    )
                else:
                    cur.execute(f"DELETE FROM {table} WHERE id = %s", (key,))
            cur.execute("COMMIT")


def test_snapshot_then_stream_under_concurrent_writes_reconciles(
    settings: Settings, stack: Stack, unique: str
) -> None:
    require(stack, "postgres")
    require(stack, "kafka")
    with temporary_database(settings, unique) as conn:
        with conn.cursor() as cur:
            cur.execute(
                "CREATE TABLE accounts (id int PRIMARY KEY, name text, amount numeric(20, 3), "
                "note text)"
            )
            cur.execute(
                "INSERT INTO accounts SELECT g, 'seed' || g, g * 1.5, NULL "
                "FROM generate_series(1, 2000) g"
            )
        pipeline = make_pipeline(unique, snapshot_chunk_rows=300, snapshot_workers=3)
        # Writes run before, while and after the slot is created and the snapshot is read:
        # the handoff must neither miss nor double a change made around the snapshot point.
        writer_conn = _connect_like(settings, unique)
        writer = threading.Thread(target=_workload, args=(writer_conn, "accounts", 3000, 7))
        writer.start()
        with capture_running(settings, pipeline) as capture:
            writer.join()
            wait_caught_up(capture, conn)
        writer_conn.close()
        records = read_topic(settings, f"{unique}.public.accounts")
        ops = {orjson.loads(v)["op"] for _, v in records if v is not None}
        assert ops == {"r", "c", "u", "d"}, "the workload must straddle the snapshot"
        state = rebuild_state(records)
        assert len(state) > 2000
        assert state == _source_rows(conn, "accounts")


def _connect_like(settings: Settings, database: str) -> Any:
    from sluiceway.connect import postgres_connection

    conn = postgres_connection(settings.postgres, database=database)
    conn.autocommit = True
    return conn


def test_connection_loss_is_retried_and_nothing_is_lost(
    settings: Settings, stack: Stack, unique: str
) -> None:
    require(stack, "postgres")
    with temporary_database(settings, unique) as conn:
        with conn.cursor() as cur:
            cur.execute(
                "CREATE TABLE accounts (id int PRIMARY KEY, name text, amount numeric(20, 3), "
                "note text)"
            )
        writer_conn = _connect_like(settings, unique)
        writer = threading.Thread(target=_workload, args=(writer_conn, "accounts", 3000, 9))
        with capture_running(settings, make_pipeline(unique)) as capture:
            wait_caught_up(capture, conn)
            writer.start()
            try:
                for _ in range(2):  # cut the replication connection twice, mid-workload
                    time.sleep(0.3)
                    pid = _walsender(conn, f"sluiceway_{unique}")
                    with conn.cursor() as cur:
                        cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
                    deadline = time.monotonic() + 30
                    while _walsender(conn, f"sluiceway_{unique}") in (None, pid):
                        assert time.monotonic() < deadline, "capture did not reconnect"
                        time.sleep(0.1)
            finally:
                writer.join()
            wait_caught_up(capture, conn, timeout=120)
        writer_conn.close()
        records = read_topic(settings, f"{unique}.public.accounts")
        assert rebuild_state(records) == _source_rows(conn, "accounts")


def _walsender(conn: Any, slot: str) -> int | None:
    with conn.cursor() as cur:
        cur.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,))
        row = cur.fetchone()
    return row[0] if row else None


class _Lines:
    """COPY's output, kept as lines."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)

    def lines(self) -> list[bytes]:
        return bytes(self.data).rstrip(b"\n").split(b"\n")


def test_snapshot_blocks_stay_bounded_and_wide_rows_arrive_whole(
    settings: Settings, stack: Stack, unique: str
) -> None:
    require(stack, "postgres")
    require(stack, "kafka")
    with temporary_database(settings, unique) as conn:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE wide (id int PRIMARY KEY, body text)")
            # 1,000 rows of 64 KB among 3,000 small ones: 64 MB in one chunk.
            cur.execute(
                "INSERT INTO wide SELECT g, CASE WHEN g % 4 = 0 THEN repeat(md5(g::text), 2000) "
                "ELSE 'short ' || g END FROM generate_series(1, 4000) g"
            )
            cur.execute("SELECT 'public.wide'::regclass::oid")
            table = table_info(conn, cur.fetchone()[0])
            assert table is not None
            query, params = json_query(
                Chunk(table, None, None),
                ["id", "body"],
                [JSON_IN_SERVER["int4"], JSON_IN_SERVER["text"]],
                table.key,
            )
            out = _Lines()
            statement = sql.SQL("COPY ({}) TO STDOUT").format(query)
            cur.copy_expert(cur.mogrify(statement, params).decode(), out)
        blocks = [line.split(b"\x1e") for line in out.lines()]
        assert max(len(line) for line in out.lines()) <= BLOCK_BYTES + 65_000
        assert max(len(rows) for rows in blocks) <= 1024
        assert len(blocks) >= 64_000_000 // BLOCK_BYTES
        rows = [orjson.loads(row.partition(b"\x1f")[2]) for block in blocks for row in block]
        assert sorted(r["id"] for r in rows) == list(range(1, 4001))

        with capture_running(settings, make_pipeline(unique)) as capture:
            wait_caught_up(capture, conn)
        state = rebuild_state(read_topic(settings, f"{unique}.public.wide"))
        with conn.cursor() as cur:
            cur.execute("SELECT id, body FROM wide")
            source = {orjson.dumps({"id": i}).decode(): {"id": i, "body": b} for i, b in cur}
        assert state == source
