"""Sources: log-based capture (PostgreSQL pgoutput, MariaDB/MySQL binlog) and query polling.

`capture_for` picks a pipeline's capture by its source kind; each has the same surface —
``run()``, ``stop`` (an Event), ``stats`` (`CaptureStats`) and ``error`` — so the CLI and the
orchestrator drive them alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sluiceway.pipeline import Pipeline
    from sluiceway.settings import Settings
    from streaming.sources.base import CaptureStats

__all__ = ["capture_for", "describe_position"]


def capture_for(
    settings: Settings,
    pipeline: Pipeline,
    on_stats: Callable[[CaptureStats], None] | None = None,
) -> Any:
    """The capture of a pipeline, by its source kind (postgres, mysql, query, syslog).

    Raises:
        ConfigError: the source database was cut over by a migration: capture reads the new
            primary, so the pipeline's source must name it.
    """
    kind = pipeline.source.kind
    database = getattr(pipeline.source, "database", None)
    if kind in ("postgres", "mysql"):
        from migrations.plan import moved_to
        from sluiceway.errors import ConfigError

        default = settings.mariadb.database if kind == "mysql" else settings.postgres.database
        moved = moved_to(settings.state_dir, kind, database or default)
        if moved is not None:
            plan, new_kind, new_database = moved
            raise ConfigError(
                f"pipeline {pipeline.name}: {kind} database {database or default} was cut over "
                f"to {new_kind} database {new_database} by migration {plan} (it is fenced, "
                f"read-only); point source at the new primary (kind: {new_kind}, database: "
                f"{new_database}), or roll the migration back"
            )
    if kind == "mysql":
        from streaming.sources.mysql.capture import MySQLCapture

        return MySQLCapture(settings, pipeline, on_stats=on_stats)
    if kind == "syslog":
        from streaming.sources.syslog.listener import SyslogListener

        return SyslogListener(settings, pipeline, on_stats=on_stats)
    if kind == "query":
        from streaming.sources.query.capture import QueryCapture

        return QueryCapture(settings, pipeline, on_stats=on_stats)
    from streaming.sources.postgres.capture import PostgresCapture

    return PostgresCapture(settings, pipeline, on_stats=on_stats)


def describe_position(pipeline: Pipeline, confirmed: int) -> str:
    """A confirmed position as people read it: an LSN, binlog file number:offset, or polls."""
    kind = pipeline.source.kind
    if kind == "postgres":
        from streaming.sources.postgres.pgoutput import format_lsn

        return format_lsn(confirmed)
    if kind == "mysql":
        return f"binlog {confirmed >> 32:06d}:{confirmed & 0xFFFFFFFF}" if confirmed else "-"
    if kind == "syslog":
        return f"{confirmed:,} messages"
    return "per table (polling)"
