"""From pipeline specifications to one lineage graph: source table → change topic → target table.

Every asset of a pipeline is in the pipeline's group, owned by its owner, with its kind
(postgres, kafka, duckdb, postgres, s3, bigquery, snowflake):

- ``<pipeline>/source/<schema>.<table>``: a table of the source database (external);
- ``<pipeline>/kafka/<prefix>.<schema>.<table>``: its change topic, fed by the capture stream;
- ``<pipeline>/kafka/<prefix>.dlq``: the dead-letter topic;
- ``<pipeline>/<target>/<table>`` (and ``<table>__history``): a target table, fed by the
  continuous load stream and materialized per time partition by the batch load
  (`orchestration.batch`).

The tables are the specification's ``include`` entries; entries with wildcards are resolved
against the source database when it answers (a specification whose source is down still loads,
with the explicit tables only). Adding a table or a target to a specification adds its assets,
with no other code.
"""

from __future__ import annotations

import fnmatch
import logging

import psycopg2
import pymysql
from dagster import AssetKey, AssetSpec

from sluiceway.connect import mariadb_connection, postgres_connection
from sluiceway.pipeline import (
    AnyTarget,
    JoinSpec,
    MySQLSource,
    Pipeline,
    QuerySource,
    SyslogSource,
)
from sluiceway.settings import Settings

__all__ = [
    "dlq_key",
    "enriched",
    "owners",
    "pipeline_specs",
    "source_key",
    "tables",
    "target_keys",
    "target_tables",
    "topic_key",
]

log = logging.getLogger(__name__)


def source_key(pipeline: Pipeline, schema: str, table: str) -> AssetKey:
    return AssetKey([pipeline.name, "source", f"{schema}.{table}"])


def topic_key(pipeline: Pipeline, schema: str, table: str) -> AssetKey:
    return AssetKey([pipeline.name, "kafka", f"{pipeline.topic_prefix}.{schema}.{table}"])


def dlq_key(pipeline: Pipeline) -> AssetKey:
    return AssetKey([pipeline.name, "kafka", pipeline.dead_letter_topic])


def owners(pipeline: Pipeline) -> list[str]:
    """Dagster owners: an e-mail address as it is, anything else as a team."""
    if not pipeline.owner:
        return []
    return [pipeline.owner if "@" in pipeline.owner else f"team:{pipeline.owner}"]


def _mysql_tables(source: MySQLSource, settings: Settings) -> list[tuple[str, str]]:
    try:
        conn = mariadb_connection(settings.mariadb, database=source.database)
    except pymysql.Error as exc:
        log.warning("MariaDB unreachable, captured tables not resolved: %s", exc)
        return []
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT table_schema, table_name FROM information_schema.tables WHERE "
                "table_type = 'BASE TABLE' AND table_schema NOT IN ('mysql', "
                "'information_schema', 'performance_schema', 'sys') ORDER BY 1, 2"
            )
            found = [(str(s), str(t)) for s, t in cur.fetchall()]
    finally:
        conn.close()
    return [(s, t) for s, t in found if source.tables.matches(s, t)]


def tables(pipeline: Pipeline, settings: Settings) -> list[tuple[str, str]]:
    """The (schema, table) pairs the pipeline captures, as far as can be known now."""
    source = pipeline.source
    if isinstance(source, QuerySource):
        return [(t.table.split(".", 1)[0], t.table.split(".", 1)[1]) for t in source.tables]
    if isinstance(source, MySQLSource):
        return _mysql_tables(source, settings)
    if isinstance(source, SyslogSource):
        return [("syslog", "messages")]
    selection = source.tables
    explicit = [
        tuple(entry.split(".", 1)) if "." in entry else ("public", entry)
        for entry in selection.include
        if not any(ch in entry for ch in "*?[")
    ]
    found: list[tuple[str, str]] = [
        (s, t)
        for s, t in explicit
        if not any(fnmatch.fnmatch(f"{s}.{t}", x) for x in selection.exclude)
    ]
    if len(found) == len(selection.include):
        return found
    try:
        conn = postgres_connection(settings.postgres, database=source.database, connect_timeout=2)
    except psycopg2.Error as exc:
        log.warning("%s: source unreachable, wildcard tables not resolved: %s", pipeline.name, exc)
        return found
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') "
                "AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
            )
            for schema, table in cur.fetchall():
                if selection.matches(schema, table) and (schema, table) not in found:
                    found.append((schema, table))
    finally:
        conn.close()
    return found


def target_tables(target: AnyTarget, schema: str, table: str) -> list[str]:
    """The target's table names for one source table (current state and/or history)."""
    name = table if schema == "public" else f"{schema}_{table}"
    names = []
    if target.mode in ("current", "both"):
        names.append(name)
    if target.mode in ("history", "both"):
        names.append(f"{name}__history")
    return names


def target_keys(pipeline: Pipeline, target: AnyTarget, schema: str, table: str) -> list[AssetKey]:
    return [
        AssetKey([pipeline.name, target.kind, name])
        for name in target_tables(target, schema, table)
    ]


def enriched(pipeline: Pipeline) -> list[tuple[str, str]]:
    """The enrichment outputs as (schema, table) pairs: loaders load them as tables."""
    return [("enriched", p.name) for p in pipeline.processors]


def _processor_deps(pipeline: Pipeline, source: str, joins: list[JoinSpec]) -> list[AssetKey]:
    names = {p.name for p in pipeline.processors}
    inputs = [source, *(j.table for j in joins)]
    return [
        topic_key(pipeline, "enriched", name)
        if name in names
        else topic_key(pipeline, *name.split(".", 1))
        for name in inputs
    ]


def pipeline_specs(pipeline: Pipeline, settings: Settings) -> list[AssetSpec]:
    """The external assets of a pipeline: source tables, change topics, the dead-letter topic."""
    group, team = pipeline.name, owners(pipeline)
    specs = []
    source = pipeline.source
    database = getattr(source, "database", None) or {
        "mysql": settings.mariadb.database,
        "syslog": "syslog",
    }.get(source.kind, settings.postgres.database)
    for schema, table in tables(pipeline, settings):
        specs.append(
            AssetSpec(
                source_key(pipeline, schema, table),
                description=f"{schema}.{table} in the {database} database (captured)",
                kinds={pipeline.source.kind},
                metadata={"database": database, "table": f"{schema}.{table}"},
                group_name=group,
                owners=team,
            )
        )
        topic = f"{pipeline.topic_prefix}.{schema}.{table}"
        specs.append(
            AssetSpec(
                topic_key(pipeline, schema, table),
                deps=[source_key(pipeline, schema, table)],
                description=f"Kafka topic {topic}: every change of {schema}.{table}, in the "
                "Debezium envelope (fed by the capture stream)",
                kinds={"kafka"},
                metadata={"topic": topic, "partitions": pipeline.topics.partitions},
                group_name=group,
                owners=team,
            )
        )
    for processor in pipeline.processors:
        specs.append(
            AssetSpec(
                topic_key(pipeline, "enriched", processor.name),
                deps=_processor_deps(pipeline, processor.source, processor.join),
                description=f"Kafka topic {pipeline.topic_prefix}.enriched.{processor.name}: "
                f"{processor.source} processed (fed by the processing stream)",
                kinds={"kafka"},
                metadata={"topic": f"{pipeline.topic_prefix}.enriched.{processor.name}"},
                group_name=group,
                owners=team,
            )
        )
    specs.append(
        AssetSpec(
            dlq_key(pipeline),
            description=f"Kafka topic {pipeline.dead_letter_topic}: records a stage could not "
            "process, with the error and their origin in the headers",
            kinds={"kafka"},
            metadata={"topic": pipeline.dead_letter_topic},
            group_name=group,
            owners=team,
        )
    )
    return specs
