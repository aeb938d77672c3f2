"""A MariaDB -> PostgreSQL migration against the real servers: the translated schema, the copy
and catch-up through Kafka under a concurrent workload, verification green when equal and red,
naming the key, when a target row diverges; stopping and re-starting the copy resumes."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg2.errors
import pymysql
import pytest
from dagster import Definitions

from migrations.plan import MigrationPlan
from migrations.report import render
from migrations.runner import CutoverRefused, MigrationRunner, MigrationState
from orchestration.migrations import migration_jobs
from orchestration.resources import SluicewayResource
from sluiceway.connect import mariadb_connection, postgres_connection
from sluiceway.settings import Settings
from stack.manager import Stack
from streaming.sources.mysql.capture import BinlogPosition
from streaming.sources.postgres.catalog import drop_slot
from streaming.sources.postgres.state import CaptureState
from tests.integration.capture_support import temporary_database
from tests.integration.conftest import require

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

SCHEMA = [
    """CREATE TABLE Customers (
         id INT AUTO_INCREMENT PRIMARY KEY, email VARCHAR(120) NOT NULL, name VARCHAR(80),
         tier ENUM('basic','gold') NOT NULL DEFAULT 'basic', created DATETIME(6),
         UNIQUE KEY email_unique (email), KEY by_name (name))""",
    """CREATE TABLE orders (
         id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY, customer_id INT NOT NULL,
         total DECIMAL(12,2), placed TIMESTAMP(6) NULL, notes JSON, flags BIT(3),
         KEY by_customer (customer_id))""",
]


@pytest.fixture
def legacy(settings: Settings, stack: Stack, unique: str) -> Iterator[Any]:
    require(stack, "mariadb")
    require(stack, "postgres")
    require(stack, "kafka")
    conn = mariadb_connection(settings.mariadb, autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{unique}`")
        cur.execute(f"USE `{unique}`")
        for statement in SCHEMA:
            cur.execute(statement)
        cur.execute(f"CREATE USER 'app_{unique}'@'%' IDENTIFIED BY 'app-secret'")
        cur.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON `{unique}`.* TO 'app_{unique}'@'%'")
    try:
        yield conn
    finally:
        with conn.cursor() as cur:
            cur.execute("SET GLOBAL read_only = OFF")
            cur.execute(f"DROP USER IF EXISTS 'app_{unique}'@'%'")
            cur.execute(f"DROP DATABASE IF EXISTS `{unique}`")
        conn.close()
        admin = postgres_connection(settings.postgres, database="postgres")
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(
                "SELECT slot_name FROM pg_replication_slots WHERE database = %s", (f"{unique}_pg",)
            )
            for (slot,) in cur.fetchall():
                drop_slot(admin, slot, timeout=30)
            cur.execute(f'DROP DATABASE IF EXISTS "{unique}_pg" WITH (FORCE)')
        admin.close()
        CaptureState.path(settings.state_dir, f"migrate_{unique}_reverse").unlink(missing_ok=True)
        BinlogPosition.path(settings.state_dir, f"migrate_{unique}").unlink(missing_ok=True)
        MigrationState.path(settings.state_dir, unique).unlink(missing_ok=True)


def plan_of(unique: str) -> MigrationPlan:
    return MigrationPlan(
        name=unique,
        source={"kind": "mysql", "database": unique},
        target={"database": f"{unique}_pg"},
        tables={"include": [f"{unique}.*"]},
    )


def app_connection(settings: Settings, unique: str) -> Any:
    """The application's own connection: no privilege to bypass read_only."""
    return pymysql.connect(
        host=settings.mariadb.host,
        port=settings.mariadb.port,
        user=f"app_{unique}",
        password="app-secret",
        database=unique,
        autocommit=True,
        charset="utf8mb4",
    )


def workload(conn: Any, stop: threading.Event, seed: int, rejected: list[str]) -> None:
    """Writes until stopped, or until the fence rejects a write (recorded in ``rejected``)."""
    rng = random.Random(seed)
    n = 0
    with conn.cursor() as cur:
        while not stop.is_set():
            n += 1
            try:
                cur.execute(
                    "INSERT INTO Customers (email, name, tier, created) "
                    "VALUES (%s, %s, %s, NOW(6))",
                    (f"c{seed}-{n}@example.org", f"name {n} 😀", rng.choice(["basic", "gold"])),
                )
                customer = cur.lastrowid
                cur.execute(
                    "INSERT INTO orders (customer_id, total, placed, notes, flags) "
                    "VALUES (%s, %s, UTC_TIMESTAMP(6), %s, b'101')",
                    (customer, rng.randint(100, 99999) / 100, '{"gift": true}'),
                )
                if n % 3 == 0:
                    cur.execute(
                        "UPDATE orders SET total = total + 1 WHERE customer_id = %s", (customer,)
                    )
                if n % 7 == 0:
                    cur.execute("DELETE FROM orders WHERE customer_id = %s", (customer,))
            except pymysql.err.OperationalError as exc:
                rejected.append(str(exc))  # the fence: --read-only
                return
            time.sleep(0.005)


def caught_up(runner: MigrationRunner, legacy: Any, timeout: float = 90) -> None:
    """The target applied everything the source has now (capture confirmed the source's
    position, and the target stored offsets past every change then in Kafka)."""
    took = runner.wait_applied(runner.source_position(), timeout)
    assert took is not None, "the target did not catch up with the source"


def run_in_thread(runner: MigrationRunner) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            runner.start()
        except BaseException as exc:  # noqa: BLE001 - checked by the test
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, errors


def test_mariadb_to_postgres_copy_verify_refuse_and_cut_over(
    settings: Settings, legacy: Any, unique: str
) -> None:
    plan = plan_of(unique).model_copy(update={"verify_every_seconds": 2.0})
    writer = app_connection(settings, unique)
    stop = threading.Event()
    rejected: list[str] = []
    load = threading.Thread(target=workload, args=(writer, stop, 3, rejected), daemon=True)
    load.start()
    time.sleep(1)  # rows before the snapshot
    runner = MigrationRunner(settings, plan)
    ddl = runner.ddl()
    assert '"id" integer GENERATED BY DEFAULT AS IDENTITY NOT NULL' in ddl
    assert "CHECK (\"tier\" IN ('basic', 'gold'))" in ddl
    assert 'CREATE UNIQUE INDEX IF NOT EXISTS "customers_email_unique"' in ddl
    assert '"id" numeric(20,0)' in ddl and '"notes" jsonb' in ddl
    assert runner.prepare() == ["Customers", "orders"]
    assert runner.prepare() == ["Customers", "orders"]  # idempotent
    thread, errors = run_in_thread(runner)
    target = postgres_connection(settings.postgres, database=f"{unique}_pg")
    target.autocommit = True
    try:
        time.sleep(4)
        # Stopped mid-copy and started again: it resumes.
        runner.stop.set()
        thread.join(60)
        assert not errors, errors
        runner = MigrationRunner(settings, plan)
        thread, errors = run_in_thread(runner)
        time.sleep(3)
        caught_up(runner, legacy)
        time.sleep(2.5)
        assert runner.state.verifications, "parity is re-checked while catching up"
        # A divergent row in the target: parity red naming the key, and no cutover.
        with target.cursor() as cur:
            cur.execute('SELECT min(id) FROM public."customers"')
            first = cur.fetchone()[0]
            cur.execute('UPDATE public."customers" SET name = %s WHERE id = %s', ("x", first))
        with pytest.raises(CutoverRefused, match="parity is red"):
            runner.cutover(approved=True)
        red = runner.state.verifications[-1]["tables"][f"{unique}.Customers"]
        # The diverged row (rows still in flight under the workload may be listed too).
        assert red["different_values"] >= 1 and [first] in red["differing_keys"]
        assert not rejected, "a refused cutover fenced the source"
        with pytest.raises(CutoverRefused, match="approval"):
            runner.cutover()
        # The source changes that row again; the change heals the target.
        with legacy.cursor() as cur:
            cur.execute(f"UPDATE `{unique}`.Customers SET name = 'healed' WHERE id = %s", (first,))
        # The cutover, under the live workload.
        result = runner.cutover(approved=True)
        thread.join(60)
        load.join(30)
    finally:
        stop.set()
        runner.stop.set()
        thread.join(60)
        writer.close()
    assert not errors, errors
    # Writes to the fenced source are rejected, at the database.
    assert rejected and "read-only" in rejected[0]
    late = app_connection(settings, unique)
    with late.cursor() as cur, pytest.raises(pymysql.err.OperationalError, match="read-only"):
        cur.execute("INSERT INTO Customers (email) VALUES ('late@example.org')")
    late.close()
    # The target equals the source at the fence position, without the copy's bookkeeping.
    assert runner.verify(), runner.state.verifications[-1]
    with target.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'public' "
            "AND column_name LIKE '\\_sluiceway%%'"
        )
        assert cur.fetchone()[0] == 0
        cur.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE '%%sluiceway%%' "
                    "OR tablename LIKE '%%\\_\\_deletes'")  # fmt: skip
        assert cur.fetchone()[0] == 0
        # New rows on the new primary get ids past the copied ones.
        cur.execute('SELECT max(id) FROM public."customers"')
        highest = int(cur.fetchone()[0])
        cur.execute(
            "INSERT INTO public.customers (email, tier) VALUES ('new@example.org', 'gold') "
            "RETURNING id"
        )
        assert cur.fetchone()[0] == highest + 1
    target.close()
    assert runner.state.phase == "cut over" and runner.state.primary == "target"
    assert result["write_unavailable_seconds"] < 30
    assert [e["what"] for e in runner.state.events][-3:] == [
        "cutover refused",
        "fenced",
        "switched",
    ]
    rollback_window(settings, legacy, unique, plan, int(highest))


def rollback_window(
    settings: Settings, legacy: Any, unique: str, plan: MigrationPlan, highest: int
) -> None:
    """Reverse replication while the new primary takes writes, then the rollback."""
    runner = MigrationRunner(settings, plan)
    thread, errors = run_in_thread(runner)  # after a cutover: reverse replication
    primary = postgres_connection(settings.postgres, database=f"{unique}_pg")
    primary.autocommit = True
    try:
        with primary.cursor() as cur:
            cur.execute(
                "INSERT INTO public.customers (email, name, tier) "
                "VALUES ('after@example.org', 'written on the new primary', 'gold') RETURNING id"
            )
            new_id = cur.fetchone()[0]
            cur.execute("UPDATE public.customers SET name = 'renamed on pg' WHERE id = 1")
            cur.execute("SELECT min(id) FROM public.orders")
            gone = cur.fetchone()[0]
            cur.execute("DELETE FROM public.orders WHERE id = %s", (gone,))
            cur.execute(
                "INSERT INTO public.orders (id, customer_id, total, notes, flags) "
                "VALUES (18446744073709551615, %s, 12.34, '{\"late\": 1}', '110')",
                (new_id,),
            )
        time.sleep(2)
        with pytest.raises(CutoverRefused, match="approval"):
            runner.rollback()
        result = runner.rollback(approved=True)
        thread.join(60)
    finally:
        runner.stop.set()
        thread.join(60)
        primary.close()
    assert not errors, errors
    assert new_id == highest + 2  # after the row the cutover test wrote
    # The old source holds what the new primary wrote, and is the primary again.
    with legacy.cursor() as cur:
        cur.execute(
            f"SELECT name FROM `{unique}`.Customers WHERE id IN (1, %s) ORDER BY id", (new_id,)
        )
        assert [r[0] for r in cur.fetchall()] == ["renamed on pg", "written on the new primary"]
        cur.execute(f"SELECT COUNT(*) FROM `{unique}`.orders WHERE id = %s", (gone,))
        assert cur.fetchone()[0] == 0
        cur.execute(
            f"SELECT total, notes, flags + 0 FROM `{unique}`.orders WHERE id = 18446744073709551615"
        )
        total, notes, flags = cur.fetchone()
        assert (str(total), flags) == ("12.34", 6) and '"late"' in notes
    assert runner.verify(), runner.state.verifications[-1]
    app = app_connection(settings, unique)
    with app.cursor() as cur:  # writable again for the application
        cur.execute("INSERT INTO Customers (email) VALUES ('back@example.org')")
    app.close()
    # The new primary is fenced now.
    fenced = postgres_connection(settings.postgres, database=f"{unique}_pg")
    with fenced.cursor() as cur, pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
        cur.execute("INSERT INTO public.customers (email, tier) VALUES ('no@example.org', 'basic')")
    fenced.close()
    assert runner.state.phase == "rolled back" and runner.state.primary == "source"
    assert result["write_unavailable_seconds"] < 30
    text = render(plan, runner.state)
    assert "primary: **source**" in text and "## Cutover" in text and "## Rollback" in text
    assert f"| {unique}.Customers |" in text and "writes unavailable for **" in text
    assert "## Lag while copying" in text


def test_the_cutover_job_stops_at_a_red_gate_and_switches_once_approved(
    settings: Settings, legacy: Any, unique: str
) -> None:
    plan = plan_of(unique)
    cutover_job = Definitions(
        jobs=migration_jobs(plan)[1:], resources={"sluiceway": SluicewayResource()}
    ).resolve_job_def(f"migrate_{unique}_cutover")
    with legacy.cursor() as cur:
        cur.execute(
            "INSERT INTO Customers (email, name) VALUES ('a@example.org', 'a'), "
            "('b@example.org', 'b')"
        )
    runner = MigrationRunner(settings, plan)
    thread, errors = run_in_thread(runner)  # the replication stream, here in a thread
    approval = {"ops": {f"migrate_{unique}_approval": {"config": {"approved_by": "test"}}}}
    try:
        caught_up(runner, legacy)
        target = postgres_connection(settings.postgres, database=f"{unique}_pg")
        with target.cursor() as cur:
            cur.execute(
                "UPDATE public.customers SET name = 'diverged' WHERE email = 'b@example.org'"
            )
        target.commit()
        red = cutover_job.execute_in_process(run_config=approval, raise_on_error=False)
        assert not red.success
        failed = [e.step_key for e in red.all_events if e.is_step_failure]
        assert failed == [f"migrate_{unique}_parity_gate"]
        started = {e.step_key for e in red.all_events if e.event_type_value == "STEP_START"}
        assert f"migrate_{unique}_approval" not in started  # the gate blocked what follows
        assert f"migrate_{unique}_fence_and_switch" not in started
        with legacy.cursor() as cur:
            cur.execute("SELECT @@read_only")
            assert cur.fetchone()[0] == 0  # nothing was fenced
            cur.execute("UPDATE Customers SET name = 'bb' WHERE email = 'b@example.org'")
        green = cutover_job.execute_in_process(run_config=approval)
        assert green.success
        switched = [
            m
            for e in green.all_events
            if e.step_key == f"migrate_{unique}_fence_and_switch" and e.is_successful_output
            for m in [e.event_specific_data.metadata]  # type: ignore[union-attr]
        ]
        assert switched[0]["write-unavailable window (s)"].value < 30
        assert "## Cutover" in switched[0]["report"].value
        thread.join(60)  # the copy sees the cutover and ends
        target.close()
    finally:
        runner.stop.set()
        thread.join(60)
    assert not errors, errors
    assert MigrationState.load(MigrationState.path(settings.state_dir, unique)).primary == "target"


def test_a_cutover_killed_after_the_fence_is_finished_by_the_next_run(
    settings: Settings, legacy: Any, unique: str
) -> None:
    plan = plan_of(unique)
    with legacy.cursor() as cur:
        cur.execute("INSERT INTO Customers (email, name) VALUES ('a@example.org', 'a')")
        cur.execute("INSERT INTO orders (customer_id, total) VALUES (1, 10.5)")
    runner = MigrationRunner(settings, plan)
    thread, errors = run_in_thread(runner)
    caught_up(runner, legacy)
    runner.stop.set()
    thread.join(60)
    assert not errors, errors
    # What a cutover killed with SIGKILL right after finishing the target leaves behind: the
    # source fenced, the fence recorded, the bookkeeping dropped, no switch recorded.
    with legacy.cursor() as cur:
        cur.execute("SET GLOBAL read_only = ON")
    with runner._changing() as state:
        state.record("fenced", at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    runner._finish_target()
    rerun = MigrationRunner(settings, plan)  # a new process
    result = rerun.cutover(approved=True)
    assert rerun.state.phase == "cut over" and rerun.state.primary == "target"
    assert "cutover resumed after the fence" in [e["what"] for e in rerun.state.events]
    assert result["write_unavailable_seconds"] >= 0
    assert rerun.verify()
    with legacy.cursor() as cur:
        cur.execute("SELECT @@read_only")
        assert cur.fetchone()[0] == 1  # the old source stays fenced after the switch


# --- PostgreSQL -> PostgreSQL (a version or host move) -----------------------------------------
def pg_workload(
    settings: Settings, database: str, stop: threading.Event, refused: list[str]
) -> None:
    """The application on the old PostgreSQL, until its session is closed by the fence."""
    conn = psycopg2.connect(settings.postgres.dsn(database), application_name="shop-app")
    conn.autocommit = True
    n = 0
    try:
        with conn.cursor() as cur:
            while not stop.is_set():
                n += 1
                cur.execute(
                    "INSERT INTO accounts (email, balance, tags, profile, opened) "
                    "VALUES (%s, %s, %s, %s, now()) RETURNING id",
                    (f"a{n}@example.org", n * 1.5, ["x", f"t{n}"], f'{{"n": {n}}}'),
                )
                if n % 3 == 0:
                    cur.execute(
                        "UPDATE accounts SET balance = balance + 1 WHERE id = %s", (n // 2,)
                    )
                if n % 5 == 0:
                    cur.execute("DELETE FROM accounts WHERE id = %s", (n // 3,))
                time.sleep(0.005)
    except psycopg2.Error as exc:
        refused.append(str(exc))
    finally:
        conn.close()


def test_postgres_to_postgres_cutover_and_rollback(
    settings: Settings, stack: Stack, unique: str
) -> None:
    require(stack, "postgres")
    require(stack, "kafka")
    plan = MigrationPlan(
        name=unique,
        source={"kind": "postgres", "database": unique},
        target={"database": f"{unique}_pg"},
        tables={"include": ["public.*"]},
    )
    with temporary_database(settings, unique) as old:
        with old.cursor() as cur:
            cur.execute(
                "CREATE TABLE accounts (id bigserial PRIMARY KEY, email text NOT NULL UNIQUE, "
                "balance numeric(12,2), tags text[], profile jsonb, opened timestamptz)"
            )
        stop = threading.Event()
        refused: list[str] = []
        writer = threading.Thread(target=pg_workload, args=(settings, unique, stop, refused))
        writer.start()
        runner = MigrationRunner(settings, plan)
        thread, errors = run_in_thread(runner)
        try:
            time.sleep(3)
            caught_up(runner, old)
            result = runner.cutover(approved=True)
            thread.join(60)
            writer.join(30)
            assert refused, "the fence closed the application's session"
            late = psycopg2.connect(settings.postgres.dsn(unique), application_name="shop-app")
            with late.cursor() as cur, pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
                cur.execute("INSERT INTO accounts (email) VALUES ('late@example.org')")
            late.close()
            assert runner.verify() and result["write_unavailable_seconds"] < 30
            # The new primary takes writes; reverse replication carries them back.
            runner = MigrationRunner(settings, plan)
            thread, errors = run_in_thread(runner)
            new = postgres_connection(settings.postgres, database=f"{unique}_pg")
            new.autocommit = True
            with new.cursor() as cur:
                cur.execute(
                    "INSERT INTO public.accounts (email, balance, tags, profile) VALUES "
                    "('new@example.org', 9.99, ARRAY['n'], '{\"new\": true}') RETURNING id"
                )
                new_id = cur.fetchone()[0]
            new.close()
            time.sleep(2)
            runner.rollback(approved=True)
            thread.join(60)
        finally:
            stop.set()
            runner.stop.set()
            thread.join(60)
            writer.join(30)
            with old.cursor() as cur:
                cur.execute(f'ALTER DATABASE "{unique}" RESET default_transaction_read_only')
            admin = postgres_connection(settings.postgres, database="postgres")
            admin.autocommit = True
            with admin.cursor() as cur:
                cur.execute(
                    "SELECT slot_name FROM pg_replication_slots WHERE database = %s",
                    (f"{unique}_pg",),
                )
                for (slot,) in cur.fetchall():
                    drop_slot(admin, slot, timeout=30)
                cur.execute(f'DROP DATABASE IF EXISTS "{unique}_pg" WITH (FORCE)')
            admin.close()
            MigrationState.path(settings.state_dir, unique).unlink(missing_ok=True)
            CaptureState.path(settings.state_dir, f"migrate_{unique}").unlink(missing_ok=True)
            CaptureState.path(settings.state_dir, f"migrate_{unique}_reverse").unlink(
                missing_ok=True
            )
        assert not errors, errors
        app = psycopg2.connect(settings.postgres.dsn(unique), application_name="shop-app")
        app.autocommit = True
        with app.cursor() as cur:
            cur.execute("SELECT email, tags, profile FROM accounts WHERE id = %s", (new_id,))
            assert cur.fetchone() == ("new@example.org", ["n"], {"new": True})
            cur.execute("INSERT INTO accounts (email) VALUES ('back@example.org')")  # writable
        app.close()
        assert runner.state.phase == "rolled back"


def test_the_migration_process_killed_in_copy_and_in_cutover_completes_when_run_again(
    settings: Settings, legacy: Any, unique: str, tmp_path: Any
) -> None:
    plan = plan_of(unique)
    spec = tmp_path / f"{unique}.yaml"
    spec.write_text(
        "\n".join(
            [
                f"name: {unique}",
                f"source: {{kind: mysql, database: {unique}}}",
                f"target: {{database: {unique}_pg}}",
                f"tables: {{include: ['{unique}.*']}}",
                "gates: {approval: false}",
            ]
        )
    )
    log = tmp_path / "migrate.log"

    def sluiceway(*args: str) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "sluiceway.cli", "migrate", *args, str(spec)],
                stdout=out,
                stderr=out,
            )

    writer = app_connection(settings, unique)
    stop = threading.Event()
    rejected: list[str] = []
    load = threading.Thread(target=workload, args=(writer, stop, 5, rejected), daemon=True)
    load.start()
    copy = cutover = None
    try:
        copy = sluiceway("start")
        time.sleep(4)
        copy.send_signal(signal.SIGKILL)  # mid-copy
        copy.wait(10)
        copy = sluiceway("start")  # resumes
        runner = MigrationRunner(settings, plan)
        caught = runner.wait_applied(runner.source_position(), 120)
        assert caught is not None, log.read_text()[-3000:]
        cutover = sluiceway("cutover")
        time.sleep(random.uniform(0.5, 2.5))  # somewhere in the cutover
        cutover.send_signal(signal.SIGKILL)
        cutover.wait(10)
        again = sluiceway("cutover")
        assert again.wait(120) in (0, 2), log.read_text()[-3000:]  # done, or already done
        final = MigrationState.load(MigrationState.path(settings.state_dir, unique))
        if final.phase != "cut over":  # the kill landed before the fence: run it once more
            assert sluiceway("cutover").wait(120) == 0, log.read_text()[-3000:]
        copy.wait(60)  # the copy sees the cutover and ends by itself
        assert copy.returncode == 0, log.read_text()[-3000:]
    finally:
        stop.set()
        load.join(30)
        writer.close()
        for process in (copy, cutover):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(10)
    runner = MigrationRunner(settings, plan)
    assert runner.state.phase == "cut over" and runner.verify()
    assert rejected and "read-only" in rejected[0]
