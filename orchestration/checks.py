"""Asset checks: parity, freshness, consumer lag, an empty dead-letter topic.

- **parity** on each current-state table of every target but S3 (the archive): the source
  table and the target table compared by key range (`loaders.parity`: counts and checksums, the
  differing keys listed). A nightly schedule runs it;
- **freshness** on the same tables: commit → target lag — how far the newest change the
  target holds is behind the newest change Kafka holds for the table (zero when the load has
  caught up, whatever the source's idle time);
- **consumer lag** on each change topic, per target: records Kafka holds that the target's
  continuous load has not stored yet;
- **dead letters** on the dead-letter topic: it must be empty.

A failing check shows on its asset in the UI with the numbers as metadata.
"""

import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetSelection,
    ScheduleDefinition,
    asset_check,
    define_asset_job,
)

from loaders.duckdb.sink import attached
from loaders.parity import compare
from loaders.sql import q
from loaders.targets import open_sink
from orchestration.assets import dlq_key, target_keys, topic_key
from orchestration.resources import SluicewayResource
from sluiceway.connect import bigquery_client, postgres_connection, snowflake_connection
from sluiceway.pipeline import (
    AnyTarget,
    BigQueryTarget,
    DuckDBTarget,
    Pipeline,
    S3Target,
    SnowflakeTarget,
)
from sluiceway.settings import Settings

__all__ = ["parity_schedule", "pipeline_checks"]

FRESHNESS_LIMIT_SECONDS = 120.0
LAG_LIMIT = 10_000


def _consumer(settings: Settings) -> Any:
    return Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"sluiceway-check-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )


def high_watermarks(settings: Settings, topic: str) -> dict[int, int]:
    """The next offset of each partition of ``topic`` (empty if it does not exist)."""
    consumer = _consumer(settings)
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return {}
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in metadata.partitions
        }
    finally:
        consumer.close()


def _source_rows(
    settings: Settings,
    pipeline: Pipeline,
    schema: str,
    table: str,
    columns: list[str],
    keys: list[str],
) -> Iterator[tuple[tuple[Any, ...], tuple[Any, ...]]]:
    conn = postgres_connection(
        settings.postgres, database=getattr(pipeline.source, "database", None)
    )
    try:
        with conn.cursor(name=f"parity_{uuid.uuid4().hex[:8]}") as cur:
            cur.itersize = 10_000
            names = ", ".join(q(c) for c in columns)
            cur.execute(f"SELECT {names} FROM {q(schema)}.{q(table)}")
            index = [columns.index(k) for k in keys]
            for row in cur:
                yield tuple(row[i] for i in index), tuple(row)
    finally:
        conn.close()


def _target_rows(
    settings: Settings,
    pipeline: Pipeline,
    target: AnyTarget,
    table: str,
    columns: list[str],
    keys: list[str],
) -> Iterator[tuple[tuple[Any, ...], tuple[Any, ...]]]:
    schema = target.schema_name or pipeline.name
    names = ", ".join(q(c) for c in columns)
    sql = f"SELECT {names} FROM {q(schema)}.{q(table)}"
    index = [columns.index(k) for k in keys]
    rows: Iterable[tuple[Any, ...]]
    if isinstance(target, DuckDBTarget):
        path = target.path or settings.state_dir / "warehouse.duckdb"
        with attached(path) as conn:
            rows = conn.execute(sql).fetchall()  # the file is released before comparing
        for row in rows:
            yield tuple(row[i] for i in index), tuple(row)
        return
    if isinstance(target, BigQueryTarget):
        client = bigquery_client(settings.bigquery)
        names = ", ".join(f"`{c}`" for c in columns)
        dataset = f"{settings.bigquery.project}.{schema}"
        for row in client.query(f"SELECT {names} FROM `{dataset}.{table}`").result():
            values = tuple(row.values())
            yield tuple(values[i] for i in index), values
        return
    if isinstance(target, SnowflakeTarget):
        conn = snowflake_connection(settings.snowflake)
        try:
            cur = conn.cursor()
            cur.execute(f"SELECT {names} FROM {settings.snowflake.database}.{schema}.{q(table)}")
            for row in cur.fetchall():
                yield tuple(row[i] for i in index), tuple(row)
        finally:
            conn.close()
        return
    pg = postgres_connection(settings.postgres, database=target.database)  # type: ignore[union-attr]
    try:
        with pg.cursor(name=f"parity_{uuid.uuid4().hex[:8]}") as cur:
            cur.itersize = 10_000
            cur.execute(sql)
            for row in cur:
                yield tuple(row[i] for i in index), tuple(row)
    finally:
        pg.close()


def _columns(
    settings: Settings, pipeline: Pipeline, schema: str, table: str
) -> tuple[list[str], list[str]]:
    """(columns, key columns) of a source table."""
    conn = postgres_connection(
        settings.postgres, database=getattr(pipeline.source, "database", None)
    )
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT a.attname, coalesce(a.attnum = ANY(i.indkey), false) FROM pg_attribute a "
                "LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary "
                "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped "
                "ORDER BY a.attnum",
                (f"{q(schema)}.{q(table)}",),
            )
            found = cur.fetchall()
    finally:
        conn.close()
    return [name for name, _ in found], [name for name, key in found if key]


def _parity(
    pipeline: Pipeline, target: AnyTarget, schema: str, table: str, name: str
) -> AssetChecksDefinition:
    key = target_keys(pipeline, target, schema, table)[0]

    @asset_check(
        asset=key,
        name="parity",
        description=f"{schema}.{table} in the source equals {name} in {target.kind}: counts "
        "and checksums by key range, differing keys listed",
        blocking=False,
    )
    def parity(
        context: AssetCheckExecutionContext, sluiceway: SluicewayResource
    ) -> AssetCheckResult:
        settings = sluiceway.settings()
        columns, keys = _columns(settings, pipeline, schema, table)
        report = compare(
            name,
            lambda: _source_rows(settings, pipeline, schema, table, columns, keys),
            lambda: _target_rows(settings, pipeline, target, name, columns, keys),
        )
        context.log.info(report.summary())
        return AssetCheckResult(
            passed=report.ok,
            severity=AssetCheckSeverity.ERROR,
            metadata={
                "source rows": report.source_rows,
                "target rows": report.target_rows,
                "key ranges": report.ranges,
                "differing ranges": len(report.differing_ranges),
                "missing in target": report.missing_in_target,
                "extra in target": report.extra_in_target,
                "different values": report.different_values,
                "differing keys (first)": ", ".join(map(str, report.differing_keys[:50])) or "none",
            },
        )

    return parity


def _freshness(
    pipeline: Pipeline, target: AnyTarget, schema: str, table: str
) -> AssetChecksDefinition:
    key = target_keys(pipeline, target, schema, table)[0]
    topic = f"{pipeline.topic_prefix}.{schema}.{table}"
    group = f"sluiceway.{pipeline.name}.{target.kind}"

    @asset_check(
        asset=key,
        name="freshness",
        description=f"commit → {target.kind} lag of {key.path[-1]}: the age of the oldest change "
        f"not loaded yet, under {FRESHNESS_LIMIT_SECONDS:.0f} s (zero when caught up)",
        blocking=False,
    )
    def freshness(sluiceway: SluicewayResource) -> AssetCheckResult:
        settings = sluiceway.settings()
        sink = open_sink(settings, pipeline, target)
        try:
            stored = sink.stored_offsets(group)
        finally:
            sink.close()
        pending = {
            p: stored.get((topic, p), 0)
            for p, high in high_watermarks(settings, topic).items()
            if stored.get((topic, p), 0) < high
        }
        oldest = _commit_ms(settings, topic, pending)
        lag = 0.0 if oldest is None else max(0.0, time.time() - oldest / 1000)
        return AssetCheckResult(
            passed=lag <= FRESHNESS_LIMIT_SECONDS,
            severity=AssetCheckSeverity.WARN,
            metadata={"commit to target lag (s)": round(lag, 3), "partitions behind": len(pending)},
        )

    return freshness


def _commit_ms(settings: Settings, topic: str, offsets: dict[int, int]) -> int | None:
    """The oldest commit time (``source.ts_ms``) of the records at ``offsets``."""
    consumer = _consumer(settings)
    oldest = None
    try:
        for partition, offset in offsets.items():
            consumer.assign([TopicPartition(topic, partition, offset)])
            msg = consumer.poll(5.0)
            if msg is None or msg.error() is not None or msg.value() is None:
                continue
            envelope = orjson.loads(msg.value())
            envelope = envelope.get("payload", envelope)
            ts = (envelope.get("source") or {}).get("ts_ms") or envelope.get("ts_ms")
            if ts is not None:
                oldest = min(oldest or int(ts), int(ts))
    finally:
        consumer.close()
    return oldest


def _consumer_lag(
    pipeline: Pipeline, target: AnyTarget, schema: str, table: str
) -> AssetChecksDefinition:
    topic = f"{pipeline.topic_prefix}.{schema}.{table}"
    group = f"sluiceway.{pipeline.name}.{target.kind}"

    @asset_check(
        asset=topic_key(pipeline, schema, table),
        name=f"consumer_lag_{target.kind}",
        description=f"records of {topic} the {target.kind} load has not stored "
        f"(under {LAG_LIMIT:,})",
        blocking=False,
    )
    def consumer_lag(sluiceway: SluicewayResource) -> AssetCheckResult:
        settings = sluiceway.settings()
        highs = high_watermarks(settings, topic)
        sink = open_sink(settings, pipeline, target)
        try:
            stored = sink.stored_offsets(group)
        finally:
            sink.close()
        lag = sum(max(0, high - stored.get((topic, p), 0)) for p, high in highs.items())
        return AssetCheckResult(
            passed=lag <= LAG_LIMIT,
            severity=AssetCheckSeverity.WARN,
            metadata={"consumer lag (records)": lag, "group": group},
        )

    return consumer_lag


def _dead_letters(pipeline: Pipeline) -> AssetChecksDefinition:
    @asset_check(
        asset=dlq_key(pipeline),
        name="empty",
        description=f"{pipeline.dead_letter_topic} holds no record",
        blocking=False,
    )
    def empty(sluiceway: SluicewayResource) -> AssetCheckResult:
        settings = sluiceway.settings()
        highs = high_watermarks(settings, pipeline.dead_letter_topic)
        # A compacted or expired dead-letter topic still counts what was ever sent: the
        # high watermark, not what is retained.
        count = sum(highs.values())
        return AssetCheckResult(
            passed=count == 0,
            severity=AssetCheckSeverity.WARN,
            metadata={"dead letters (ever)": count, "topic": pipeline.dead_letter_topic},
        )

    return empty


def pipeline_checks(
    pipeline: Pipeline,
    tables: list[tuple[str, str]],
    outputs: list[tuple[str, str]] | None = None,
) -> list[AssetChecksDefinition]:
    """Every check of a pipeline's assets (parity only for captured tables: an enrichment
    output has no source table to compare with)."""
    checks = [_dead_letters(pipeline)]
    for target in pipeline.targets:
        for schema, table in outputs or []:
            if target.kind != "s3":
                checks.append(_consumer_lag(pipeline, target, schema, table))
            checks.append(_freshness(pipeline, target, schema, table))
        for schema, table in tables:
            if target.kind != "s3":
                checks.append(_consumer_lag(pipeline, target, schema, table))
            comparable = not isinstance(target, S3Target) and target.mode != "history"
            if comparable and pipeline.source.kind == "postgres":
                name = table if schema == "public" else f"{schema}_{table}"
                checks.append(_parity(pipeline, target, schema, table, name))
            checks.append(_freshness(pipeline, target, schema, table))
    return checks


def parity_schedule(checks: list[AssetChecksDefinition]) -> ScheduleDefinition | None:
    """The nightly run of every parity check."""
    keys = [key for check in checks for key in check.check_keys if key.name == "parity"]
    if not keys:
        return None
    job = define_asset_job(
        "parity_nightly",
        selection=AssetSelection.checks(*keys),
        description="Source ↔ target parity of every current-state table",
    )
    return ScheduleDefinition(
        name="parity_nightly", job=job, cron_schedule="0 2 * * *", execution_timezone="UTC"
    )
