"""Benchmark: a MariaDB -> PostgreSQL migration of the shop schema under a steady workload.

Each run creates the shop's four tables in MariaDB (customers, products, orders, order_items;
``--rows`` order items), then:

- **copy** — `sluiceway migrate`'s copy (snapshot through binlog capture into Kafka, loaded
  into the translated PostgreSQL tables) from start until the target applied everything, in
  rows/s, next to a plain dump-and-load of the same tables in the same run: a streaming
  ``SELECT`` with PyMySQL, written as CSV and ``COPY``-ed into identical PostgreSQL tables;
- **write-unavailable window** — with an application writing small transactions (~100/s)
  throughout, the cutover's fence-to-switch time (drain, exact parity, sequences, switch),
  against the goal of 5 s: on a database the size of the demo shop (1,000 order items), and
  on the large one above (the exact re-verification inside the fence reads every row, so the
  window grows with the database).

    python -m bench.migration [--rows 200000] [--runs 3]
"""

from __future__ import annotations

import csv
import io
import random
import threading
import time
import uuid

import pymysql
from rich.console import Console

from bench.record import Figure, command, summarize
from migrations.plan import MigrationPlan
from migrations.runner import MigrationRunner, MigrationState
from migrations.schema import translate
from migrations.verify import source_tables
from sluiceway.connect import mariadb_connection, postgres_connection
from sluiceway.settings import Settings
from streaming.sources.mysql.capture import BinlogPosition
from streaming.sources.postgres.catalog import drop_slot

__all__ = ["main"]

console = Console()
SHOP = [
    """CREATE TABLE customers (id INT AUTO_INCREMENT PRIMARY KEY, email VARCHAR(120) NOT NULL,
         name VARCHAR(80), country CHAR(2), created DATETIME(6) NOT NULL, UNIQUE KEY (email))""",
    """CREATE TABLE products (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(80) NOT NULL,
         category VARCHAR(40), price DECIMAL(10,2) NOT NULL)""",
    """CREATE TABLE orders (id BIGINT AUTO_INCREMENT PRIMARY KEY, customer_id INT NOT NULL,
         status ENUM('new','paid','shipped') NOT NULL, total DECIMAL(12,2),
         placed TIMESTAMP(6) NULL, KEY (customer_id))""",
    """CREATE TABLE order_items (id BIGINT AUTO_INCREMENT PRIMARY KEY, order_id BIGINT NOT NULL,
         product_id INT NOT NULL, quantity INT NOT NULL, price DECIMAL(10,2) NOT NULL,
         KEY (order_id))""",
]


def _shop(settings: Settings, database: str, rows: int) -> None:
    conn = mariadb_connection(settings.mariadb, autocommit=True)
    customers, orders = max(1, rows // 20), max(1, rows // 4)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{database}`")
        cur.execute(f"USE `{database}`")
        for statement in SHOP:
            cur.execute(statement)
        cur.execute(
            "INSERT INTO customers SELECT seq, CONCAT('c', seq, '@example.org'), "
            f"CONCAT('customer ', seq), 'DE', NOW(6) FROM seq_1_to_{customers}"
        )
        cur.execute(
            "INSERT INTO products SELECT seq, CONCAT('product ', seq), "
            "ELT(1 + seq % 4, 'books', 'toys', 'garden', 'music'), 1 + seq % 100 FROM seq_1_to_1000"
        )
        cur.execute(
            f"INSERT INTO orders SELECT seq, 1 + seq % {customers}, 'paid', seq % 1000, "
            f"UTC_TIMESTAMP(6) FROM seq_1_to_{orders}"
        )
        cur.execute(
            f"INSERT INTO order_items SELECT seq, 1 + seq % {orders}, 1 + seq % 1000, "
            f"1 + seq % 5, 9.99 FROM seq_1_to_{rows}"
        )
        cur.execute(f"CREATE USER 'app_{database}'@'%' IDENTIFIED BY 'bench-app'")
        cur.execute(
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON `{database}`.* TO 'app_{database}'@'%'"
        )
    conn.close()


def _drop(settings: Settings, database: str) -> None:
    conn = mariadb_connection(settings.mariadb, autocommit=True)
    with conn.cursor() as cur:
        cur.execute("SET GLOBAL read_only = OFF")
        cur.execute(f"DROP USER IF EXISTS 'app_{database}'@'%'")
        cur.execute(f"DROP DATABASE IF EXISTS `{database}`")
    conn.close()
    admin = postgres_connection(settings.postgres, database="postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        for name in (f"{database}_pg", f"{database}_dump"):
            cur.execute("SELECT slot_name FROM pg_replication_slots WHERE database = %s", (name,))
            for (slot,) in cur.fetchall():
                drop_slot(admin, slot, timeout=30)
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def _plan(database: str, target: str) -> MigrationPlan:
    return MigrationPlan(
        name=database,
        source={"kind": "mysql", "database": database},
        target={"database": target},
        tables={"include": [f"{database}.*"]},
        gates={"approval": False},
    )


def _dump_and_load(settings: Settings, database: str) -> tuple[float, int]:
    """The baseline: SELECT every table with PyMySQL, CSV, COPY into identical tables."""
    plan = _plan(database, f"{database}_dump")
    tables = source_tables(settings, plan)
    admin = postgres_connection(settings.postgres, database="postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{database}_dump"')
    admin.close()
    target = postgres_connection(settings.postgres, database=f"{database}_dump")
    with target.cursor() as cur:
        for table in tables:
            for statement in translate(plan, table):
                cur.execute(statement)
    target.commit()
    source = mariadb_connection(
        settings.mariadb, database=database, cursorclass=pymysql.cursors.SSCursor
    )
    rows = 0
    started = time.perf_counter()
    for table in tables:
        names = [c.name for c in table.columns]
        with source.cursor() as cur:
            cur.execute(f"SELECT {', '.join(names)} FROM `{table.name}`")
            while True:
                chunk = cur.fetchmany(50_000)
                if not chunk:
                    break
                buffer = io.StringIO()
                csv.writer(buffer).writerows(chunk)
                buffer.seek(0)
                with target.cursor() as pg:
                    pg.copy_expert(
                        f'COPY public."{table.name}" ({", ".join(names)}) '
                        "FROM STDIN WITH (FORMAT csv)",
                        buffer,
                    )
                rows += len(chunk)
    target.commit()
    elapsed = time.perf_counter() - started
    source.close()
    target.close()
    return elapsed, rows


def _workload(
    settings: Settings, database: str, stop: threading.Event, rejected: list[str]
) -> None:
    """~100 small transactions per second, as the application, until fenced or stopped."""
    conn = pymysql.connect(
        host=settings.mariadb.host,
        port=settings.mariadb.port,
        user=f"app_{database}",
        password="bench-app",  # noqa: S106 - the throwaway application user this run created
        database=database,
        autocommit=True,
    )
    rng = random.Random(7)  # noqa: S311 - a workload, not a secret
    try:
        with conn.cursor() as cur:
            while not stop.is_set():
                try:
                    cur.execute(
                        "INSERT INTO orders (customer_id, status, total, placed) "
                        "VALUES (%s, 'new', %s, UTC_TIMESTAMP(6))",
                        (rng.randint(1, 100), rng.randint(1, 9999) / 100),
                    )
                    cur.execute(
                        "UPDATE orders SET status = 'paid' WHERE id = %s", (rng.randint(1, 1000),)
                    )
                except pymysql.err.OperationalError as exc:
                    rejected.append(str(exc))
                    return
                time.sleep(0.01)
    finally:
        conn.close()


def _migrate(settings: Settings, database: str, rows: int) -> tuple[float, float]:
    """Copy rows/s (start to caught up) and the cutover's write-unavailable window."""
    plan = _plan(database, f"{database}_pg")
    runner = MigrationRunner(settings, plan)
    runner.prepare()
    stop = threading.Event()
    rejected: list[str] = []
    writer = threading.Thread(target=_workload, args=(settings, database, stop, rejected))
    errors: list[BaseException] = []

    def copy() -> None:
        try:
            runner.start()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    thread = threading.Thread(target=copy, daemon=True)
    started = time.perf_counter()
    thread.start()
    writer.start()
    took = None
    while took is None:
        if errors:
            raise errors[0]
        took = runner.wait_applied(runner.source_position(), 5)
    copied = rows * 1.3125 + 1000  # order items + orders (1/4) + customers (1/20) + products
    copy_rate = copied / (time.perf_counter() - started)
    time.sleep(3)  # steady state: the workload streams through
    result = runner.cutover(approved=True)
    stop.set()
    writer.join(30)
    thread.join(60)
    if errors:
        raise errors[0]
    if not rejected:
        raise RuntimeError("the fence did not reject the application's writes")
    return copy_rate, float(result["write_unavailable_seconds"])


def _one(settings: Settings, rows: int, dump: bool) -> tuple[float, float, float]:
    """One shop of ``rows`` order items: dump-and-load rows/s (if asked), copy rows/s, window."""
    database = f"bench_mig_{uuid.uuid4().hex[:6]}"
    try:
        _shop(settings, database, rows)
        dumped = 0.0
        if dump:
            seconds, count = _dump_and_load(settings, database)
            dumped = count / seconds
        copy_rate, window = _migrate(settings, database, rows)
        return dumped, copy_rate, window
    finally:
        _drop(settings, database)
        BinlogPosition.path(settings.state_dir, f"migrate_{database}").unlink(missing_ok=True)
        MigrationState.path(settings.state_dir, database).unlink(missing_ok=True)


def run(settings: Settings, rows: int, runs: int) -> list[Figure]:
    """Measure, print and return the figures."""
    dumps: list[float] = []
    copies: list[float] = []
    windows: list[float] = []
    large: list[float] = []
    for number in range(1, runs + 1):
        console.print(f"run {number}/{runs}: the shop with {rows:,} order items, then 1,000")
        dumped, copy_rate, window = _one(settings, rows, dump=True)
        dumps.append(dumped)
        copies.append(copy_rate)
        large.append(window)
        windows.append(_one(settings, 1_000, dump=False)[2])
        console.print(
            f"  dump-and-load {dumped:,.0f} rows/s; migrate copy {copy_rate:,.0f} rows/s; "
            f"write-unavailable window {windows[-1]:.2f} s (demo size), {window:.2f} s "
            f"({rows:,} order items)"
        )
    return [
        summarize(
            "migration copy rows/s (MariaDB -> PostgreSQL through Kafka)",
            "rows/s",
            copies,
            "plain dump-and-load: PyMySQL SELECT -> CSV -> COPY, same tables",
            dumps,
        ),
        summarize(
            "migration write-unavailable window, demo-shop size (fence to switch, steady writes)",
            "s",
            windows,
            "goal: 5 s",
            [5.0] * len(windows),
            higher_is_better=False,
        ),
        summarize(
            f"migration write-unavailable window, {rows // 1000}k order items (steady writes)",
            "s",
            large,
            "goal: 5 s",
            [5.0] * len(large),
            higher_is_better=False,
        ),
    ]


def main() -> None:
    """Command-line entry: measure and record into docs/benchmarks.json."""
    command(__doc__, run, "rows", 200_000)


if __name__ == "__main__":
    main()
