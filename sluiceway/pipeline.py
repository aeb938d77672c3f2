"""The pipeline specification: one small YAML file per pipeline in ``pipelines/``.

A specification declares what to capture and where it goes; every stage reads the same
validated model (capture now; transforms, processors, targets and schedules extend it). A
minimal one::

    name: shop
    source:
      kind: postgres
      database: shop
      tables:
        include: [public.*]
    topics:
      prefix: shop
      partitions: 3

Invalid specifications fail at load with a `ConfigError` naming the file, the field, the value
and the fix.
"""

from __future__ import annotations

import fnmatch
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sluiceway.errors import ConfigError
from sluiceway.settings import REPO_ROOT
from sluiceway.validation import load_spec

__all__ = [
    "PIPELINES_DIR",
    "AnySource",
    "AnyTarget",
    "AnyTransform",
    "BigQueryTarget",
    "DuckDBTarget",
    "ErrorPolicy",
    "JoinSpec",
    "MySQLSource",
    "Pipeline",
    "PostgresSource",
    "PostgresTarget",
    "ProcessorSpec",
    "QuerySource",
    "QueryTable",
    "S3Target",
    "SnowflakeTarget",
    "SyslogSource",
    "TableSelection",
    "Target",
    "TopicSettings",
    "WindowSpec",
    "list_pipelines",
    "load_pipeline",
]

PIPELINES_DIR = REPO_ROOT / "pipelines"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TableSelection(_Spec):
    """Which tables a source captures: 'schema.table' patterns with * and ? wildcards."""

    include: list[str] = Field(["public.*"], min_length=1, description="tables to capture")
    exclude: list[str] = Field([], description="tables to leave out, even if included")

    @model_validator(mode="after")
    def _qualified(self) -> TableSelection:
        for pattern in [*self.include, *self.exclude]:
            if "." not in pattern:
                raise ValueError(
                    f"table pattern {pattern!r} must be schema-qualified, e.g. 'public.{pattern}'"
                )
        return self

    def matches(self, schema: str, table: str) -> bool:
        """True if ``schema.table`` is included and not excluded."""
        name = f"{schema}.{table}"
        included = any(fnmatch.fnmatchcase(name, p) for p in self.include)
        return included and not any(fnmatch.fnmatchcase(name, p) for p in self.exclude)


class PostgresSource(_Spec):
    """Log-based capture from PostgreSQL with pgoutput."""

    kind: Literal["postgres"] = "postgres"
    database: str | None = Field(None, description="database; default: settings' postgres.database")
    slot: str | None = Field(
        None, pattern=r"^[a-z0-9_]{1,63}$", description="replication slot; default sluiceway_<name>"
    )
    publication: str | None = Field(None, description="publication; default sluiceway_<name>")
    tables: TableSelection = TableSelection()
    snapshot: Literal["initial", "never"] = Field(
        "initial", description="initial: snapshot the tables when the slot is created"
    )
    snapshot_workers: int = Field(2, ge=1, le=16, description="parallel snapshot connections")
    snapshot_chunk_rows: int = Field(50_000, ge=100, description="rows per snapshot chunk")
    snapshot_encoding: Literal["server", "python"] = Field(
        "server",
        description="server: PostgreSQL encodes the snapshot rows of tables whose column types "
        "it encodes exactly as capture does (row_to_json; the same bytes, far less CPU); "
        "python: every row through capture's converters",
    )
    heartbeat_seconds: float = Field(10.0, gt=0, description="interval of heartbeat messages")
    status_seconds: float = Field(1.0, gt=0, description="interval of position confirmations")
    wal_budget_mb: int = Field(2048, ge=1, description="warn when the slot retains more WAL")
    replica_identity_full: bool = Field(
        False, description="set REPLICA IDENTITY FULL on captured tables (complete before images)"
    )


class MySQLSource(_Spec):
    """Log-based capture from the row-based binlog of MariaDB or MySQL."""

    kind: Literal["mysql"] = "mysql"
    database: str | None = Field(None, description="database; default: settings' mariadb.database")
    tables: TableSelection = Field(
        TableSelection(include=["*.*"]), description="'database.table' patterns to capture"
    )
    server_id: int | None = Field(
        None, ge=2, lt=2**32, description="replica server id; default: derived from the name"
    )
    snapshot: Literal["initial", "never"] = Field(
        "initial", description="initial: read the tables once, then stream from that position"
    )
    snapshot_fetch_rows: int = Field(10_000, ge=100, description="rows per snapshot fetch")
    zero_dates: Literal["null", "fail"] = Field(
        "null",
        description="DATE/DATETIME '0000-00-00': null (as Debezium), or fail the record "
        "(dead-letter topic or stop, per errors.tolerance)",
    )
    heartbeat_seconds: float = Field(10.0, gt=0, description="server heartbeat while idle")
    status_seconds: float = Field(1.0, gt=0, description="interval of position saves")


class QueryTable(_Spec):
    """One table polled by query (the Kafka Connect JDBC source's modes)."""

    table: str = Field(description="schema.table (SQLite: main.table)")
    mode: Literal["incrementing", "timestamp", "timestamp+incrementing"] = Field(
        description="incrementing: new rows by a growing column; timestamp: changed rows by a "
        "last-modified column; both: the timestamp, ties broken by the incrementing column"
    )
    incrementing_column: str | None = Field(None, description="a strictly growing column")
    timestamp_column: str | None = Field(None, description="a last-modified column")
    key: list[str] | None = Field(None, description="key columns; default: the primary key")

    @model_validator(mode="after")
    def _columns(self) -> QueryTable:
        if "incrementing" in self.mode and not self.incrementing_column:
            raise ValueError(f"mode {self.mode} needs incrementing_column")
        if "timestamp" in self.mode and not self.timestamp_column:
            raise ValueError(f"mode {self.mode} needs timestamp_column")
        if "." not in self.table:
            raise ValueError(f"table {self.table!r} must be schema-qualified")
        return self


class QuerySource(_Spec):
    """Query-based capture: polls any SQLAlchemy database. The fallback when no log can be
    read: it sees neither deletes nor the intermediate states between two polls."""

    kind: Literal["query"] = "query"
    url: str = Field(
        description="SQLAlchemy URL without the password (e.g. postgresql+psycopg2://u@h:5432/db, "
        "mysql+pymysql://u@h:3306/db, sqlite:///path.db); 'postgres' or 'mariadb' mean the "
        "settings' servers"
    )
    database: str | None = Field(None, description="with url postgres/mariadb: the database")
    password_env: str | None = Field(
        None, description="environment variable holding the password (never in the file)"
    )
    tables: list[QueryTable] = Field(min_length=1)
    poll_seconds: float = Field(1.0, gt=0, description="pause between polls when caught up")
    delay_seconds: float = Field(
        2.0,
        ge=0,
        description="timestamp modes: only read rows older than now minus this, so "
        "transactions still in flight are not skipped",
    )
    batch_rows: int = Field(10_000, ge=1, description="most rows per query")


class SyslogSource(_Spec):
    """A syslog listener (UDP and TCP; RFC 5424 and RFC 3164): each message becomes an insert
    event of the table ``syslog.messages`` (topic ``<prefix>.syslog.messages``)."""

    kind: Literal["syslog"] = "syslog"
    host: str = Field("127.0.0.1", description="address to listen on")
    udp_port: int | None = Field(
        5514, ge=0, le=65535, description="UDP port (0: any free port); null: no UDP"
    )
    tcp_port: int | None = Field(
        5514, ge=0, le=65535, description="TCP port (0: any free port); null: no TCP"
    )
    max_message_bytes: int = Field(65_536, ge=480, description="longest message accepted")


AnySource = PostgresSource | MySQLSource | QuerySource | SyslogSource
Source = Annotated[AnySource, Field(discriminator="kind")]


class _Transform(_Spec):
    tables: list[str] | None = Field(
        None, description="'schema.table' patterns this applies to; default: every table"
    )

    def applies(self, schema: str, table: str) -> bool:
        if self.tables is None:
            return True
        name = f"{schema}.{table}"
        return any(fnmatch.fnmatchcase(name, p) for p in self.tables)


class DropFields(_Transform):
    """ReplaceField (exclude): remove fields."""

    type: Literal["drop"] = "drop"
    fields: list[str] = Field(min_length=1)


class KeepFields(_Transform):
    """ReplaceField (include): keep only these fields (key columns always stay)."""

    type: Literal["keep"] = "keep"
    fields: list[str] = Field(min_length=1)


class RenameFields(_Transform):
    """ReplaceField (renames): old name -> new name."""

    type: Literal["rename"] = "rename"
    fields: dict[str, str] = Field(min_length=1)


class MaskFields(_Transform):
    """MaskField: replace values with fixed characters (``keep_last`` shows the tail)."""

    type: Literal["mask"] = "mask"
    fields: list[str] = Field(min_length=1)
    char: str = Field("*", min_length=1, max_length=1)
    length: int | None = Field(8, ge=1, description="mask length; null: the value's length")
    keep_last: int = Field(0, ge=0, description="characters left visible at the end")


class HashFields(_Transform):
    """Salted SHA-256 (hex) of each value: joinable, not readable."""

    type: Literal["hash"] = "hash"
    fields: list[str] = Field(min_length=1)
    salt_env: str = Field(description="environment variable holding the salt (a secret)")


class CastFields(_Transform):
    """Cast: field -> int64 | float64 | string | boolean | decimal."""

    type: Literal["cast"] = "cast"
    fields: dict[str, Literal["int64", "float64", "string", "boolean", "decimal"]] = Field(
        min_length=1
    )


class FilterRecords(_Transform):
    """Filter: keep only the events whose row (after, or before for deletes) matches."""

    type: Literal["filter"] = "filter"
    where: str

    @model_validator(mode="after")
    def _expression(self) -> FilterRecords:
        from streaming.processors.expressions import Expression

        Expression(self.where)
        return self


class InsertLineage(_Transform):
    """InsertField / InsertHeader: where the event came from and when it was captured."""

    type: Literal["lineage"] = "lineage"
    into: Literal["headers", "fields"] = "headers"
    prefix: str = Field("_lineage_", description="field-name prefix (into: fields)")


class RouteTopic(_Transform):
    """RegexRouter: rewrite the topic name."""

    type: Literal["route"] = "route"
    regex: str
    replacement: str

    @model_validator(mode="after")
    def _regex(self) -> RouteTopic:
        try:
            re.compile(self.regex)
        except re.error as exc:
            raise ValueError(f"regex {self.regex!r}: {exc}") from None
        return self


class FlattenEnvelope(_Transform):
    """ExtractNewRecordState: the plain row instead of the envelope, with ``__op``,
    ``__deleted`` and ``__source_ts_ms``. Loaders and processors read envelopes, so a
    pipeline that flattens has no targets or processors of its own."""

    type: Literal["flatten"] = "flatten"
    deletes: Literal["rewrite", "drop", "tombstone"] = Field(
        "rewrite", description="rewrite: the before row with __deleted true"
    )


class PythonTransform(_Transform):
    """A custom callable ``module:function`` taking and returning a `Record` (None drops)."""

    type: Literal["python"] = "python"
    callable: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


AnyTransform = (
    DropFields
    | KeepFields
    | RenameFields
    | MaskFields
    | HashFields
    | CastFields
    | FilterRecords
    | InsertLineage
    | RouteTopic
    | FlattenEnvelope
    | PythonTransform
)
TransformSpec = Annotated[AnyTransform, Field(discriminator="type")]


class TopicSettings(_Spec):
    """How the change topics are named and configured."""

    prefix: str | None = Field(None, description="topic prefix; default: the pipeline name")
    partitions: int = Field(1, ge=1, le=1000, description="partitions of each change topic")
    replication_factor: int | None = Field(
        None, ge=1, description="replication factor; default: the brokers' default"
    )
    retention_ms: int = Field(-1, ge=-1, description="retention.ms; -1 keeps events forever")
    cleanup_policy: Literal["delete", "compact", "compact,delete"] = Field(
        "delete", description="cleanup.policy of the change topics"
    )
    tombstones: bool | None = Field(
        None, description="a null-valued record after each delete; default: on when compacted"
    )
    transaction_topic: bool = Field(False, description="also write transaction boundaries")
    format: Literal["json", "connect-json"] = Field(
        "json", description="json, or connect-json (JsonConverter schema + payload)"
    )

    def emit_tombstones(self) -> bool:
        """Whether deletes are followed by tombstones."""
        if self.tombstones is not None:
            return self.tombstones
        return "compact" in self.cleanup_policy


class ErrorPolicy(_Spec):
    """What a stage does with a record it cannot process (Kafka Connect's names)."""

    tolerance: Literal["none", "all"] = Field(
        "none",
        description="none: stop with the record named; all: send it to the dead-letter topic "
        "with its error in the headers, and go on",
    )
    dead_letter_topic: str | None = Field(None, description="default: <topic prefix>.dlq")


class JoinSpec(_Spec):
    """Enrich each event with the current row of another captured table (a stream-table
    join). ``how: left`` keeps events without a match (the columns are null); ``inner``
    drops them."""

    table: str = Field(description="schema.table of this pipeline whose current row joins")
    # Not "on": YAML reads a bare `on` as true.
    key: str = Field(description="the event's field holding the joined table's primary key")
    columns: dict[str, str] = Field(
        default_factory=dict, description="output name -> column of the joined table"
    )
    how: Literal["left", "inner"] = "left"


class WindowSpec(_Spec):
    """An aggregation per key in event-time windows."""

    kind: Literal["tumbling", "hopping", "sliding"] = "tumbling"
    seconds: float = Field(gt=0, description="window length")
    step_seconds: float | None = Field(None, gt=0, description="hopping: step between starts")
    grace_seconds: float = Field(0, ge=0, description="how late an event may still count")
    key: str = Field(description="field the windows are per (e.g. category)")
    sum: dict[str, str] = Field(default_factory=dict, description="output -> expression")
    count: str | None = Field(None, description="output name of the event count")
    emit: Literal["final", "updates"] = Field(
        "final", description="final: once per window when it closes; updates: every change"
    )
    late: Literal["drop", "topic"] = Field(
        "drop",
        description="events later than the grace period: drop (and count), or also send them "
        "to <prefix>.enriched.<name>.late with how late they were",
    )


class ProcessorSpec(_Spec):
    """One stream processor: from a change topic (or another processor) to
    ``<prefix>.enriched.<name>``. Steps run in this order: where, join, derive, where_after,
    select, python, window."""

    name: str = Field(description="lowercase identifier; the output topic's last part")
    source: str = Field(description="schema.table of this pipeline, or another processor's name")
    where: str | None = Field(None, description="keep events for which this is true")
    join: list[JoinSpec] = Field(default_factory=list)
    derive: dict[str, str] = Field(default_factory=dict, description="new field -> expression")
    where_after: str | None = Field(None, description="a filter on joined and derived fields")
    select: list[str] | None = Field(None, description="the fields to keep (default: all)")
    python: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="module:function applied after select: takes the working row (a dict), "
        "returns it changed, or None to drop it",
    )
    window: WindowSpec | None = None
    deletes: bool = Field(True, description="pass deletes on (as deletes of the output key)")

    @model_validator(mode="after")
    def _expressions(self) -> ProcessorSpec:
        from streaming.processors.expressions import Expression

        texts = [self.where, self.where_after, *self.derive.values()]
        if self.window is not None:
            texts += list(self.window.sum.values())
        for text in texts:
            if text is not None:
                Expression(text)
        if not _NAME.match(self.name):
            raise ValueError(f"processor name {self.name!r}: lowercase letters, digits and _")
        return self


class _Target(_Spec):
    mode: Literal["current", "history", "both"] = Field(
        "both", description="current state per key, every change, or both"
    )
    schema_name: str | None = Field(None, description="target schema; default: the pipeline name")
    batch_rows: int = Field(20_000, ge=1, description="most changes per micro-batch")
    batch_seconds: float = Field(0.5, gt=0, description="longest wait to fill a micro-batch")
    partitions: Literal["hourly", "daily"] = Field(
        "daily", description="time partitions of the batch load (what backfills replay)"
    )
    partitions_start: datetime = Field(
        datetime(2026, 1, 1, tzinfo=UTC), description="first partition (UTC)"
    )


class DuckDBTarget(_Target):
    """The embedded default warehouse."""

    kind: Literal["duckdb"] = "duckdb"
    path: Path | None = Field(None, description="database file; default <state>/warehouse.duckdb")


class PostgresTarget(_Target):
    """A PostgreSQL database as a target."""

    kind: Literal["postgres"] = "postgres"
    database: str | None = Field(None, description="database; default: settings' postgres.database")


class S3Target(_Target):
    """S3 (Parquet): the lake and the long-term archive of every change, for replays."""

    kind: Literal["s3"] = "s3"
    mode: Literal["history"] = Field(
        "history", description="S3 keeps every change; current state is read from it"
    )
    root: str | None = Field(None, description="key prefix in the bucket; default: pipeline name")


class BigQueryTarget(_Target):
    """A BigQuery dataset (``schema_name``; default: the pipeline name)."""

    kind: Literal["bigquery"] = "bigquery"


class SnowflakeTarget(_Target):
    """A Snowflake schema (``schema_name``; default: the pipeline name) in settings' database."""

    kind: Literal["snowflake"] = "snowflake"


AnyTarget = DuckDBTarget | PostgresTarget | S3Target | BigQueryTarget | SnowflakeTarget
Target = Annotated[AnyTarget, Field(discriminator="kind")]


class Pipeline(_Spec):
    """One pipeline: a source, its change topics, and the targets that load them."""

    name: str = Field(description="lowercase identifier: letters, digits, _")
    description: str = ""
    owner: str | None = Field(None, description="team or person, shown in the orchestrator")
    source: Source
    topics: TopicSettings = TopicSettings()
    transforms: list[TransformSpec] = Field(
        [], description="capture-time transforms, in order, before events reach Kafka"
    )
    targets: list[Target] = Field([], description="where the change topics are loaded")
    errors: ErrorPolicy = ErrorPolicy()
    processors: list[ProcessorSpec] = Field(
        [], description="stream processors writing <prefix>.enriched.<name>"
    )

    @model_validator(mode="before")
    @classmethod
    def _default_kind(cls, data: Any) -> Any:
        # A source without a kind is PostgreSQL (the first source, and the default).
        if isinstance(data, dict) and isinstance(data.get("source"), dict):
            data = {**data, "source": {"kind": "postgres", **data["source"]}}
        return data

    @model_validator(mode="after")
    def _name(self) -> Pipeline:
        if not _NAME.match(self.name):
            raise ValueError(
                f"name {self.name!r} must be lowercase letters, digits and _ (max 41 characters)"
            )
        if any(t.type == "flatten" for t in self.transforms) and (self.targets or self.processors):
            raise ValueError(
                "transforms: flatten writes plain rows, but targets and processors read change "
                "envelopes; flatten in a pipeline of its own (no targets, no processors)"
            )
        return self

    @property
    def slot(self) -> str:
        slot = self.source.slot if isinstance(self.source, PostgresSource) else None
        return slot or f"sluiceway_{self.name}"

    @property
    def publication(self) -> str:
        publication = self.source.publication if isinstance(self.source, PostgresSource) else None
        return publication or f"sluiceway_{self.name}"

    def source_database(self) -> str | None:
        """The source's database setting (None: the settings' default, or no database)."""
        return getattr(self.source, "database", None)

    @property
    def topic_prefix(self) -> str:
        return self.topics.prefix or self.name

    @property
    def dead_letter_topic(self) -> str:
        return self.errors.dead_letter_topic or f"{self.topic_prefix}.dlq"

    def target(self, kind: str | None = None) -> AnyTarget:
        """The pipeline's target of that kind (None: its only target)."""
        if kind is None and len(self.targets) == 1:
            return self.targets[0]
        if kind is None:
            kinds = ", ".join(t.kind for t in self.targets) or "none"
            raise ConfigError(f"pipeline {self.name} has targets {kinds}: name one (--target)")
        for target in self.targets:
            if target.kind == kind:
                return target
        kinds = ", ".join(t.kind for t in self.targets) or "none"
        raise ConfigError(f"pipeline {self.name} has no {kind} target (it has: {kinds})")


def _directory(directory: Path | None) -> Path:
    if directory is not None:
        return directory
    from sluiceway.settings import load_settings

    return load_settings().pipelines_dir


def load_pipeline(name_or_path: str | Path, directory: Path | None = None) -> Pipeline:
    """Load and validate a pipeline by name (``<pipelines_dir>/<name>.yaml``, the settings'
    directory by default) or by path.

    Raises:
        ConfigError: naming the file, and each invalid field with its value and fix.
    """
    return load_spec(name_or_path, _directory(directory), Pipeline, "pipeline")


def list_pipelines(directory: Path | None = None) -> list[Pipeline]:
    """Every pipeline specification in ``directory`` (the settings' by default)."""
    return [load_pipeline(path) for path in sorted(_directory(directory).glob("*.yaml"))]
