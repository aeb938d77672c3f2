"""Query-based capture: poll tables of any SQLAlchemy database into the same change topics.

The modes are those users know from the Kafka Connect JDBC source connector:

- ``incrementing`` — new rows by a strictly growing column (``id > last``): inserts only;
- ``timestamp`` — changed rows by a last-modified column (``ts > last AND ts < now - delay``);
- ``timestamp+incrementing`` — the same, ties on the timestamp broken by the incrementing
  column (``ts = last_ts AND id > last_id OR ts > last_ts``), so equal timestamps are safe.

Timestamp modes only read rows older than the database's clock minus ``delay_seconds``: a
transaction that committed late with an early timestamp would otherwise be skipped for good.
Positions are saved per table once Kafka acknowledged the poll's events, so a restart resumes
without loss (the last poll may be sent again).

What polling cannot see — the reason log-based capture exists: deletes (a deleted row simply
stops appearing), and every intermediate state of a row changed twice between two polls
(only the last is read). Events carry op ``c`` (incrementing) or ``u`` (timestamp modes; the
poller cannot tell an insert from an update), ``before`` null, and as positions
``commit_lsn`` = the timestamp in microseconds (or the incrementing value) and ``lsn`` = the
incrementing value, so loaders order a key's versions correctly.

The upper bound comes from the database's own clock in UTC (``UTC_TIMESTAMP(6)`` on MySQL and
MariaDB, ``CURRENT_TIMESTAMP`` elsewhere, SQLite's ``strftime(..., 'now')``), so timestamp
columns without a zone must hold UTC. On SQLite, write timestamps in one text format (as
SQLAlchemy does): the comparison there is textual.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import DBAPIError, NoSuchTableError, OperationalError

from sluiceway.connect import kafka_admin
from sluiceway.errors import ConfigError, SourceFatal, SourceUnavailable
from sluiceway.pipeline import Pipeline, QuerySource, QueryTable
from sluiceway.settings import Settings
from streaming.events import ChangeEvent, ColumnSchema, Op, TableSchema, topic_name
from streaming.kafka.producer import DeliveryTracker, EventProducer
from streaming.sources.base import Capture, CaptureStats
from streaming.sources.statefile import load_state, save_state
from streaming.sources.values import Converter, converter

__all__ = ["QueryCapture", "engine_url", "logical_type"]

log = logging.getLogger(__name__)

CONNECTOR = "query"
VERSION = "sluiceway-0.1"


def engine_url(settings: Settings, source: QuerySource) -> URL:
    """The SQLAlchemy URL, with the password from the settings or the environment (never the
    specification file). Rendered, SQLAlchemy hides the password as ***."""
    if source.url == "postgres":
        pg = settings.postgres
        return URL.create(
            "postgresql+psycopg2",
            pg.user,
            pg.password.get_secret_value(),
            pg.host,
            pg.port,
            source.database or pg.database,
        )
    if source.url == "mariadb":
        db = settings.mariadb
        return URL.create(
            "mysql+pymysql",
            db.user,
            db.password.get_secret_value(),
            db.host,
            db.port,
            source.database or db.database,
            query={"charset": "utf8mb4"},
        )
    url = make_url(source.url)
    if source.password_env:
        password = os.environ.get(source.password_env)
        if password is None:
            raise ConfigError(
                f"source.password_env: the environment variable {source.password_env} is not set"
            )
        url = url.set(password=password)
    return url


def logical_type(column_type: sa.types.TypeEngine[Any]) -> tuple[str, int | None, int | None]:
    """A reflected SQLAlchemy type as (logical type, precision, scale)."""
    name = type(column_type).__name__.upper()
    if isinstance(column_type, sa.Boolean):
        return "boolean", None, None
    if isinstance(column_type, sa.SmallInteger) or name in ("TINYINT", "SMALLINT"):
        return "int16", None, None
    if isinstance(column_type, sa.BigInteger):
        return "int64", None, None
    if isinstance(column_type, sa.Integer):
        return "int64" if "UNSIGNED" in str(column_type).upper() else "int32", None, None
    if isinstance(column_type, sa.Float):
        return ("float32" if name in ("REAL", "FLOAT") else "float64"), None, None
    if isinstance(column_type, sa.Numeric):
        return "decimal", column_type.precision, column_type.scale
    if isinstance(column_type, sa.DateTime):
        return ("timestamptz" if column_type.timezone else "timestamp"), None, None
    if isinstance(column_type, sa.Date):
        return "date", None, None
    if isinstance(column_type, sa.Time):
        return "time", None, None
    if isinstance(column_type, sa.JSON):
        return "json", None, None
    if isinstance(column_type, sa.LargeBinary | sa.types._Binary):
        return "bytes", None, None
    if isinstance(column_type, sa.Uuid):
        return "uuid", None, None
    return "string", None, None


class _Table:
    """One polled table: its reflected shape, converters, query and position."""

    def __init__(self, spec: QueryTable, table: sa.Table, pipeline: Pipeline, db: str) -> None:
        self.spec = spec
        self.table = table
        schema, name = spec.table.split(".", 1)
        self.schema, self.name = schema, name
        self.topic = topic_name(pipeline.topic_prefix, schema, name)
        # Reflected names are SQLAlchemy's quoted_name; events need plain str keys.
        key = spec.key or [str(c.name) for c in table.primary_key.columns]
        if not key and spec.incrementing_column:
            key = [spec.incrementing_column]
        for wanted in [*key, spec.incrementing_column, spec.timestamp_column]:
            if wanted is not None and wanted not in table.c:
                known = ", ".join(table.c.keys())
                raise ConfigError(
                    f"source.tables: {spec.table} has no column {wanted!r} (it has: {known})"
                )
        columns = []
        for column in table.columns:
            logical, precision, scale = logical_type(column.type)
            columns.append(
                ColumnSchema(
                    str(column.name),
                    logical,
                    str(column.type).lower(),
                    str(column.name) in key,
                    precision,
                    scale,
                )
            )
        self.shape = TableSchema(schema, name, tuple(columns))
        self.key = tuple(key)
        self.names = [c.name for c in columns]
        self.converters: list[Converter] = [converter(c) for c in columns]
        stamp = table.c[spec.timestamp_column] if spec.timestamp_column else None
        self.naive_timestamps = (
            stamp is not None and isinstance(stamp.type, sa.DateTime) and not stamp.type.timezone
        )
        self.last_ts: Any = None
        self.last_inc: Any = None
        self.server = pipeline.topic_prefix
        self.database = db

    # --- positions ---------------------------------------------------------------------------
    def position(self) -> dict[str, Any]:
        ts = self.last_ts
        return {
            "ts": ts.isoformat() if isinstance(ts, datetime | date) else ts,
            "inc": self.last_inc,
        }

    def restore(self, saved: dict[str, Any]) -> None:
        ts = saved.get("ts")
        self.last_ts = datetime.fromisoformat(ts) if isinstance(ts, str) else ts
        self.last_inc = saved.get("inc")

    # --- the query -----------------------------------------------------------------------------
    def query(
        self, upper: datetime | None, limit: int | None, through: Any = None
    ) -> sa.Select[Any]:
        """The next rows after the saved position (timestamp modes: older than ``upper``;
        ``through``: every row up to and including that timestamp, no limit)."""
        c = self.table.c
        mode = self.spec.mode
        statement = sa.select(self.table)
        inc_name = self.spec.incrementing_column or ""
        if mode == "incrementing":
            inc = c[inc_name]
            if self.last_inc is not None:
                statement = statement.where(inc > self.last_inc)
            return statement.order_by(inc).limit(limit)
        ts = c[self.spec.timestamp_column or ""]
        statement = statement.where(ts < upper)
        order = [ts]
        if through is not None:
            statement = statement.where(ts <= through)
        if mode == "timestamp":
            if self.last_ts is not None:
                statement = statement.where(ts > self.last_ts)
        else:
            inc = c[inc_name]
            order.append(inc)
            if self.last_ts is not None:
                statement = statement.where(
                    sa.or_(ts > self.last_ts, sa.and_(ts == self.last_ts, inc > self.last_inc))
                )
        statement = statement.order_by(*order)
        return statement.limit(limit) if limit is not None else statement

    def event(self, values: dict[str, Any], ts_ms: int) -> ChangeEvent:
        row = {
            name: None if values[name] is None else convert(values[name])
            for name, convert in zip(self.names, self.converters, strict=True)
        }
        inc = values.get(self.spec.incrementing_column) if self.spec.incrementing_column else None
        stamp = values.get(self.spec.timestamp_column) if self.spec.timestamp_column else None
        micros = _micros(stamp)
        commit = micros if micros is not None else _int(inc)
        source = {
            "version": VERSION,
            "connector": CONNECTOR,
            "name": self.server,
            "ts_ms": micros // 1000 if micros is not None else ts_ms,
            "snapshot": "false",
            "db": self.database,
            "schema": self.schema,
            "table": self.name,
            "commit_lsn": commit,
            "lsn": _int(inc),
            "schema_id": self.shape.id,
        }
        op: Op = "c" if self.spec.mode == "incrementing" else "u"
        key = {k: row[k] for k in self.key} if self.key else None
        # The position advances with every row read (rows come in position order).
        if stamp is not None:
            self.last_ts = stamp
        if inc is not None:
            self.last_inc = inc
        return ChangeEvent(self.topic, key, op, None, row, source, ts_ms)


def _micros(value: Any) -> int | None:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return int(aware.timestamp() * 1_000_000)
    return None


def _int(value: Any) -> int:
    try:
        return int(value) if value is not None else 0
    except (TypeError, ValueError):
        return 0


class QueryCapture(Capture):
    """Polls one pipeline's tables into Kafka until `stop` is set."""

    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        *,
        on_stats: Callable[[CaptureStats], None] | None = None,
    ) -> None:
        if not isinstance(pipeline.source, QuerySource):
            raise TypeError("QueryCapture needs a pipeline with source kind query")
        super().__init__(settings, pipeline, on_stats=on_stats)
        self.source: QuerySource = pipeline.source
        self.url = engine_url(settings, self.source)
        self._state_path = self.path(settings.state_dir, pipeline.name)
        self.polls = 0

    @staticmethod
    def describe(source: dict[str, Any]) -> str:
        """The polled row's position: its timestamp (microseconds) and incrementing value."""
        return f"timestamp/increment {source.get('commit_lsn')}/{source.get('lsn')}"

    @staticmethod
    def path(state_dir: Path, pipeline: str) -> Path:
        """Where a pipeline's poll positions live."""
        return state_dir / "capture" / f"{pipeline}.query.json"

    def _run_once(self) -> None:
        engine = sa.create_engine(self.url, pool_pre_ping=True)
        tracker = DeliveryTracker()
        producer = EventProducer(self.settings.kafka, tracker)
        self.emitter.attach(producer)
        try:
            tables = self._reflect(engine)
            self.emitter.admin = self.emitter.admin or kafka_admin(self.settings.kafka)
            self.emitter.ensure_topics([t.topic for t in tables])
            saved = load_state(self._state_path) or {}
            for table in tables:
                table.restore(saved.get(table.spec.table, {}))
                self.emitter.publish(table.shape)
            self.stats.phase = "streaming"
            while not self.stop.is_set():
                full = self.poll(engine, producer, tracker, tables)
                self._report()
                if not full:
                    self.stop.wait(self.source.poll_seconds)
        except OperationalError as exc:
            raise SourceUnavailable(
                f"cannot query {self.url.render_as_string()}: {exc.orig}"
            ) from exc
        except DBAPIError as exc:
            raise SourceFatal(f"query capture of {self.pipeline.name}: {exc.orig}") from exc
        finally:
            producer.flush(60)
            engine.dispose()
        self.stats.phase = "stopped"
        self._report()

    def _reflect(self, engine: Engine) -> list[_Table]:
        metadata = sa.MetaData()
        tables = []
        database = engine.url.database or ""
        for spec in self.source.tables:
            schema, name = spec.table.split(".", 1)
            try:
                reflected = sa.Table(
                    name,
                    metadata,
                    schema=None if (engine.dialect.name, schema) == ("sqlite", "main") else schema,
                    autoload_with=engine,
                )
            except NoSuchTableError:
                raise ConfigError(f"source.tables: {spec.table} does not exist") from None
            tables.append(_Table(spec, reflected, self.pipeline, database))
        return tables

    def poll(
        self,
        engine: Engine,
        producer: EventProducer,
        tracker: DeliveryTracker,
        tables: list[_Table],
    ) -> bool:
        """One round over every table; True if any table had a full batch (poll again now).
        Positions are saved only once Kafka acknowledged the round's events."""
        full = False
        with engine.connect() as conn:
            now = _database_now(conn)
            upper = now - timedelta(seconds=self.source.delay_seconds)
            for table in tables:
                column = (
                    table.table.c[table.spec.timestamp_column]
                    if table.spec.timestamp_column
                    else None
                )
                bound = upper
                if (
                    column is not None
                    and isinstance(column.type, sa.DateTime)
                    and not column.type.timezone
                ):
                    bound = upper.astimezone(UTC).replace(tzinfo=None)
                rows = conn.execute(table.query(bound, self.source.batch_rows)).mappings().all()
                if table.spec.mode == "timestamp" and len(rows) >= self.source.batch_rows:
                    # No tie-breaker: never stop inside a run of equal timestamps (the next
                    # poll reads after the last one). Read the batch up to and including it.
                    last = rows[-1][table.spec.timestamp_column or ""]
                    rows = conn.execute(table.query(bound, None, through=last)).mappings().all()
                ts_ms = int(time.time() * 1000)
                batch = tracker.open()
                for values in rows:
                    event = table.event(dict(values), ts_ms)
                    self.emitter.send(batch, event, table.shape)
                    self.stats.events += 1
                tracker.seal(batch, 0)
                full = full or len(rows) >= self.source.batch_rows
            conn.rollback()
        if producer.flush(60) > 0:
            raise SourceUnavailable("Kafka did not acknowledge a poll in 60 s")
        self.polls += 1
        self.stats.transactions = self.polls
        self.stats.last_commit_ms = int(time.time() * 1000)
        save_state(self._state_path, {t.spec.table: t.position() for t in tables})
        return full


def _database_now(conn: sa.Connection) -> datetime:
    """The database's clock in UTC to the microsecond, as an aware datetime (MySQL's and
    SQLite's CURRENT_TIMESTAMP stop at the second, which would stretch the safety delay)."""
    dialect = conn.dialect.name
    clock: Any = sa.func.current_timestamp()
    if dialect in ("mysql", "mariadb"):
        clock = sa.func.utc_timestamp(6)
    elif dialect == "sqlite":
        clock = sa.func.strftime("%Y-%m-%d %H:%M:%f", "now")
    value: Any = conn.execute(sa.select(clock)).scalar()
    clock = datetime.fromisoformat(value) if isinstance(value, str) else value
    if not isinstance(clock, datetime):
        raise SourceFatal(f"the database clock answered {value!r}, not a timestamp")
    return clock if clock.tzinfo is not None else clock.replace(tzinfo=UTC)
