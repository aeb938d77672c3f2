"""The demo shop: a PostgreSQL database with customers, products, orders and order items, and a
workload that keeps changing it (inserts, updates, deletes at a set rate).

`create_shop` is idempotent: it creates the database and tables if missing and seeds them
once. `Workload` runs in a thread: each tick places an order with items, updates a few rows
(an order's status, a product's price, a customer's e-mail) and now and then cancels (deletes)
an order — the mix a real shop's log has.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any

import psycopg2

from sluiceway.connect import postgres_connection
from sluiceway.settings import Settings

__all__ = ["SHOP_TABLES", "Workload", "create_shop"]

log = logging.getLogger(__name__)

SHOP_TABLES = ["customers", "products", "orders", "order_items"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS customers (
    id bigserial PRIMARY KEY, name text NOT NULL, email text NOT NULL, country char(2) NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS products (
    id bigserial PRIMARY KEY, name text NOT NULL, category text NOT NULL,
    price numeric(10, 2) NOT NULL, attributes jsonb NOT NULL DEFAULT '{}');
CREATE TABLE IF NOT EXISTS orders (
    id bigserial PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers (id),
    status text NOT NULL, total numeric(12, 2) NOT NULL DEFAULT 0,
    placed_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS order_items (
    order_id bigint NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line int NOT NULL, product_id bigint NOT NULL REFERENCES products (id),
    quantity int NOT NULL, price numeric(10, 2) NOT NULL, PRIMARY KEY (order_id, line));
"""

_CATEGORIES = ["books", "games", "garden", "kitchen", "music", "outdoor", "toys"]
_COUNTRIES = ["DE", "FR", "NL", "PL", "SE", "US", "JP", "BR"]
_STATUSES = ["placed", "paid", "shipped", "delivered"]


def create_shop(
    settings: Settings,
    database: str = "shop",
    customers: int = 200,
    products: int = 50,
    orders: int = 300,
) -> bool:
    """Create and seed the shop database if it is not there; True if it was created."""
    admin = postgres_connection(settings.postgres, database="postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
        exists = cur.fetchone() is not None
        if not exists:
            cur.execute(f'CREATE DATABASE "{database}"')
    admin.close()
    conn = postgres_connection(settings.postgres, database=database)
    rng = random.Random(7)  # noqa: S311 - demo data, not secrets
    with conn, conn.cursor() as cur:
        cur.execute(_SCHEMA)
        cur.execute("SELECT count(*) FROM customers")
        row = cur.fetchone()
        if row is not None and row[0] == 0:
            for i in range(customers):
                cur.execute(
                    "INSERT INTO customers (name, email, country) VALUES (%s, %s, %s)",
                    (f"Customer {i}", f"c{i}@example.com", rng.choice(_COUNTRIES)),
                )
            for i in range(products):
                cur.execute(
                    "INSERT INTO products (name, category, price, attributes) "
                    "VALUES (%s, %s, %s, %s)",
                    (
                        f"Product {i}",
                        rng.choice(_CATEGORIES),
                        round(rng.uniform(2, 300), 2),
                        f'{{"weight_g": {rng.randint(50, 5000)}}}',
                    ),
                )
            for _ in range(orders):
                _place_order(cur, rng)
    conn.close()
    return not exists


def _place_order(cur: Any, rng: random.Random) -> None:
    cur.execute(
        "INSERT INTO orders (customer_id, status) SELECT id, 'placed' FROM customers "
        "ORDER BY random() LIMIT 1 RETURNING id"
    )
    order = cur.fetchone()[0]
    for line in range(1, rng.randint(1, 4) + 1):
        cur.execute(
            "INSERT INTO order_items SELECT %s, %s, id, %s, price FROM products "
            "ORDER BY random() LIMIT 1",
            (order, line, rng.randint(1, 5)),
        )
    cur.execute(
        "UPDATE orders SET total = (SELECT coalesce(sum(quantity * price), 0) FROM order_items "
        "WHERE order_id = %s) WHERE id = %s",
        (order, order),
    )


class Workload:
    """Changes the shop at about ``rate`` transactions per second until `stop`."""

    def __init__(self, settings: Settings, database: str = "shop", rate: float = 5.0) -> None:
        self.settings = settings
        self.database = database
        self.rate = rate
        self.stop = threading.Event()
        self.transactions = 0
        self._rng = random.Random()  # noqa: S311 - demo data, not secrets

    def run(self) -> None:
        conn = postgres_connection(self.settings.postgres, database=self.database)
        try:
            while not self.stop.is_set():
                try:
                    with conn, conn.cursor() as cur:
                        self._tick(cur)
                    self.transactions += 1
                except psycopg2.Error as exc:
                    log.warning("workload: %s", exc)
                    conn.rollback()
                self.stop.wait(1.0 / self.rate)
        finally:
            conn.close()

    def _tick(self, cur: Any) -> None:
        rng = self._rng
        action = rng.random()
        if action < 0.45:
            _place_order(cur, rng)
        elif action < 0.75:
            cur.execute(
                "UPDATE orders SET status = CASE status WHEN 'placed' THEN 'paid' WHEN 'paid' "
                "THEN 'shipped' ELSE 'delivered' END WHERE id = (SELECT id FROM orders "
                "WHERE status <> 'delivered' ORDER BY random() LIMIT 1)"
            )
        elif action < 0.85:
            cur.execute(
                "UPDATE products SET price = round(price * (0.9 + random() * 0.2)::numeric, 2) "
                "WHERE id = (SELECT id FROM products ORDER BY random() LIMIT 1)"
            )
        elif action < 0.93:
            cur.execute(
                "UPDATE customers SET email = 'c' || id || '.' || floor(random() * 1000) "
                "|| '@example.com' WHERE id = (SELECT id FROM customers ORDER BY random() LIMIT 1)"
            )
        else:
            cur.execute(
                "DELETE FROM orders WHERE id = (SELECT id FROM orders WHERE status = 'placed' "
                "ORDER BY random() LIMIT 1)"
            )

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="shop-workload", daemon=True)
        thread.start()
        return thread


def wait_for(predicate: Any, timeout: float, step: float = 0.5) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False
