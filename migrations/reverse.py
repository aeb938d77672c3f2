"""Reverse replication: the new primary's changes applied back to the old source, for rollback
(`MySQLApplier` for a MariaDB/MySQL source, `PostgresApplier` for a PostgreSQL one).

After a cutover the target (PostgreSQL) takes the writes. Its changes are captured like any
source (pgoutput, from a slot created inside the fence, so nothing written after the switch is
missed) into ``migrate_<plan>_reverse.*`` topics, and `MySQLApplier` applies them to the old
MariaDB/MySQL database, which stays fenced (``read_only``) for applications — the applier's
user has the privilege to write past it.

Applying is keyed and in order: one consumer reads each key's partition in order, upserts
(``INSERT ... ON DUPLICATE KEY UPDATE``) or deletes by key, and commits its Kafka offsets after
the database commit. A crash replays from the last committed offsets; replaying a key's
changes in order ends at the same row (at least once, converging). Values are converted from
the event encoding to what each MySQL column takes (ISO timestamps without the zone, base64
bytes, bit strings as integers, ISO 8601 durations as TIME).

Hand-written: no maintained library applies Debezium envelopes to MySQL outside Kafka Connect.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import Consumer

from loaders.postgres.types import cast_expression
from loaders.sql import q
from migrations.plan import MigrationPlan
from migrations.schema import SourceTable
from sluiceway.connect import kafka_admin, mariadb_connection, postgres_connection
from sluiceway.pipeline import TopicSettings
from sluiceway.settings import Settings
from streaming.events import topic_name
from streaming.kafka.topics import ensure_topics

__all__ = ["Applier", "ApplierStats", "MySQLApplier", "PostgresApplier", "mysql_value"]

log = logging.getLogger(__name__)

_DURATION = re.compile(
    r"^(?P<sign>-)?P(?:(?P<d>-?\d+)D)?(?:T(?:(?P<h>-?\d+)H)?(?:(?P<m>-?\d+)M)?"
    r"(?:(?P<s>-?\d+(?:\.\d+)?)S)?)?$"
)


def _time(value: str) -> str:
    """An ISO 8601 duration (PostgreSQL's interval) or HH:MM:SS as MySQL TIME text."""
    found = _DURATION.match(value)
    if found is None:
        return value
    seconds = (
        float(found["d"] or 0) * 86400
        + float(found["h"] or 0) * 3600
        + float(found["m"] or 0) * 60
        + float(found["s"] or 0)
    )
    if found["sign"]:
        seconds = -seconds
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    hours, rest = divmod(int(seconds), 3600)
    minutes, whole = divmod(rest, 60)
    micros = round((seconds - int(seconds)) * 1_000_000)
    text = f"{sign}{hours:02d}:{minutes:02d}:{whole:02d}"
    return f"{text}.{micros:06d}" if micros else text


def mysql_value(data_type: str, value: Any) -> Any:
    """An event value as the MySQL column of ``data_type`` takes it."""
    if value is None:
        return None
    if data_type in ("datetime", "timestamp") and isinstance(value, str):
        return value.rstrip("Z").replace("T", " ")
    if data_type == "time" and isinstance(value, str):
        return _time(value)
    if data_type == "bit":
        if isinstance(value, bool):
            return int(value)
        return int(str(value), 2) if str(value) else 0
    if data_type in ("binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"):
        return base64.b64decode(value) if isinstance(value, str) else value
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return value


@dataclass
class ApplierStats:
    """What the applier reports."""

    applied: int = 0
    batches: int = 0


class Applier:
    """Applies the reverse topics to the old source until `stop` is set (subclasses: how to
    connect and how to apply one change)."""

    def __init__(
        self,
        settings: Settings,
        plan: MigrationPlan,
        tables: list[SourceTable],
        topic_prefix: str,
        group: str,
        topics: TopicSettings | None = None,
    ) -> None:
        self.settings = settings
        self.plan = plan
        self.group = group
        self.prefix = topic_prefix
        self.topics = topics or TopicSettings()
        self.stop = threading.Event()
        self.stats = ApplierStats()
        self.error: BaseException | None = None
        # Reverse topics are named after the target's tables: map them back.
        self._tables = {plan.target_table(t.name): t for t in tables}

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:
            self.error = exc
            raise

    def _run(self) -> None:
        consumer = Consumer(
            {
                **self.settings.kafka.client_config(),
                "group.id": self.group,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        schema = self.plan.target.schema_name
        topics = [topic_name(self.prefix, schema, name) for name in self._tables]
        # Subscribe by name, once they exist (a pattern would see new topics only at the next
        # metadata refresh, minutes later).
        ensure_topics(kafka_admin(self.settings.kafka), topics, self.topics)
        consumer.subscribe(topics)
        conn = self.connect()
        try:
            while not self.stop.is_set():
                messages = consumer.consume(500, 0.2)
                records = [m for m in messages if m.error() is None and m.value() is not None]
                if not records:
                    continue
                with conn.cursor() as cur:
                    for message in records:
                        self._apply(cur, message.topic(), orjson.loads(message.value()))
                conn.commit()
                consumer.commit(asynchronous=False)
                self.stats.applied += len(records)
                self.stats.batches += 1
        except Exception:
            conn.rollback()
            raise
        finally:
            consumer.close()
            conn.close()

    def connect(self) -> Any:
        raise NotImplementedError

    def _apply(self, cur: Any, topic: str, envelope: dict[str, Any]) -> None:
        """One change: a delete by key, or an upsert of the columns it carries (TOAST values
        an update left unchanged are not among them)."""
        envelope = envelope.get("payload", envelope) if "payload" in envelope else envelope
        table = self._tables.get(topic.rsplit(".", 1)[1])
        if table is None or envelope.get("op") not in ("c", "u", "r", "d"):
            return
        if envelope["op"] == "d":
            self.delete(cur, table, envelope.get("before") or {})
            return
        unchanged = set(envelope.get("unchanged") or [])
        after = envelope.get("after") or {}
        self.upsert(cur, table, {k: v for k, v in after.items() if k not in unchanged})

    def delete(self, cur: Any, table: SourceTable, before: dict[str, Any]) -> None:
        raise NotImplementedError

    def upsert(self, cur: Any, table: SourceTable, after: dict[str, Any]) -> None:
        raise NotImplementedError


class MySQLApplier(Applier):
    """Upserts and deletes into the old MariaDB/MySQL source."""

    def connect(self) -> Any:
        return mariadb_connection(
            self.settings.mariadb,
            database=self.plan.source.database,
            init_command="SET SESSION time_zone = '+00:00', foreign_key_checks = 0",
        )

    def delete(self, cur: Any, table: SourceTable, before: dict[str, Any]) -> None:
        kinds = {c.name: c.data_type for c in table.columns}
        where = " AND ".join(f"{_backquote(k)} = %s" for k in table.key)
        cur.execute(
            f"DELETE FROM {_backquote(table.name)} WHERE {where}",
            [mysql_value(kinds[k], before.get(k)) for k in table.key],
        )

    def upsert(self, cur: Any, table: SourceTable, after: dict[str, Any]) -> None:
        kinds = {c.name: c.data_type for c in table.columns}
        names = [c for c in kinds if c in after]
        columns = ", ".join(_backquote(c) for c in names)
        marks = ", ".join(["%s"] * len(names))
        updates = ", ".join(f"{_backquote(c)} = VALUES({_backquote(c)})" for c in names)
        cur.execute(
            f"INSERT INTO {_backquote(table.name)} ({columns}) VALUES ({marks}) "
            f"ON DUPLICATE KEY UPDATE {updates or '1 = 1'}",
            [mysql_value(kinds[c], after[c]) for c in names],
        )


def _backquote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _text(value: Any) -> str | None:
    """An event value as the text the loader's casts read."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


class PostgresApplier(Applier):
    """Upserts and deletes into the old PostgreSQL source, casting each value from the event
    encoding exactly as the PostgreSQL loader does."""

    def connect(self) -> Any:
        # The old source is fenced (read-only by default): this session writes past it.
        return postgres_connection(
            self.settings.postgres,
            database=self.plan.source.database,
            options="-c default_transaction_read_only=off -c TimeZone=UTC",
        )

    def delete(self, cur: Any, table: SourceTable, before: dict[str, Any]) -> None:
        columns = {c.name: c for c in table.logical}
        keys = [columns[k] for k in table.key]
        staged = ", ".join(f"%s::text AS {q(k.name)}" for k in keys)
        where = " AND ".join(
            f"t.{q(k.name)} = {cast_expression(k, 's.' + q(k.name))}" for k in keys
        )
        cur.execute(
            f"DELETE FROM {q(table.schema)}.{q(table.name)} t USING (SELECT {staged}) s "
            f"WHERE {where}",
            [_text(before.get(k.name)) for k in keys],
        )

    def upsert(self, cur: Any, table: SourceTable, after: dict[str, Any]) -> None:
        name = f"{q(table.schema)}.{q(table.name)}"
        chosen = [c for c in table.logical if c.name in after]
        staged = ", ".join(f"%s::text AS {q(c.name)}" for c in chosen)
        values = ", ".join(cast_expression(c, "s." + q(c.name)) for c in chosen)
        names = ", ".join(q(c.name) for c in chosen)
        updates = ", ".join(f"{q(c.name)} = EXCLUDED.{q(c.name)}" for c in chosen)
        conflict = ", ".join(q(k) for k in table.key)
        cur.execute(
            f"INSERT INTO {name} ({names}) SELECT {values} FROM (SELECT {staged}) s "
            f"ON CONFLICT ({conflict}) DO UPDATE SET {updates}",
            [_text(after[c.name]) for c in chosen],
        )
