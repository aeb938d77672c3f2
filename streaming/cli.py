"""``sluiceway pipelines`` and ``sluiceway capture``: list pipelines, run and manage capture."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from sluiceway.errors import SluicewayError
from sluiceway.pipeline import Pipeline, list_pipelines, load_pipeline
from sluiceway.settings import Settings, load_settings
from streaming.sources import capture_for, describe_position
from streaming.sources.base import CaptureStats
from streaming.sources.postgres.capture import PostgresCapture
from streaming.sources.postgres.catalog import drop_slot, slot_health
from streaming.sources.postgres.incremental import request_snapshot
from streaming.sources.postgres.pgoutput import format_lsn
from streaming.sources.postgres.state import CaptureState

__all__ = ["capture_app", "pipelines_app"]

console = Console()
pipelines_app = typer.Typer(help="Pipeline specifications in pipelines/.", no_args_is_help=True)
capture_app = typer.Typer(help="Change data capture into Kafka.", no_args_is_help=True)

PipelineName = Annotated[str, typer.Argument(help="pipeline name (pipelines/<name>.yaml) or path")]


@pipelines_app.command("list")
def list_() -> None:
    """Every pipeline with its source, tables and topic prefix."""
    try:
        pipelines = list_pipelines()
    except SluicewayError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    table = Table("pipeline", "source", "tables", "topics", "slot")
    for p in pipelines:
        selection = getattr(p.source, "tables", None)
        if selection is None:
            tables = "syslog.messages"
        elif isinstance(selection, list):
            tables = ", ".join(t.table for t in selection)
        else:
            tables = ", ".join(selection.include)
        table.add_row(p.name, p.source.kind, tables, f"{p.topic_prefix}.*", p.slot)
    console.print(table)


def _status_line(pipeline: Pipeline, stats: CaptureStats) -> str:
    line = (
        f"{stats.phase}: {stats.events:,} events, {stats.transactions:,} transactions, "
        f"confirmed {describe_position(pipeline, stats.confirmed_lsn)}, lag {stats.lag_ms():,} ms"
    )
    if stats.dead_letters:
        line += f", {stats.dead_letters:,} dead letters"
    if pipeline.source.kind == "postgres":
        line += f", WAL retained {stats.retained_wal_bytes / 2**20:,.1f} MiB"
    return line


@capture_app.command("run")
def run(pipeline: PipelineName) -> None:
    """Capture until SIGTERM or Ctrl-C, which flush Kafka and confirm positions before exit
    (PostgreSQL pgoutput, MariaDB/MySQL binlog or query polling, by the source's kind)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        spec = load_pipeline(pipeline)
        capture = capture_for(load_settings(), spec)
    except SluicewayError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    progress = Progress(
        TextColumn("snapshot"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} rows"),
        TextColumn("{task.fields[rate]:,.0f} rows/s"),
        TimeRemainingColumn(),
    )
    task = progress.add_task("snapshot", total=None, rate=0.0)
    # One live display: the snapshot's progress bar, then the streaming status line.
    live = Live(progress, console=console, refresh_per_second=2)

    def on_stats(stats: CaptureStats) -> None:
        if not live.is_started:
            live.start()
        if stats.phase == "snapshot":
            elapsed = max(1e-3, time.monotonic() - stats.started)
            progress.update(
                task,
                completed=stats.snapshot_rows,
                total=max(stats.snapshot_estimate, stats.snapshot_rows),
                rate=stats.snapshot_rows / elapsed,
            )
        else:
            live.update(_status_line(spec, stats))

    capture._on_stats = on_stats
    _stop_on_signals(capture.stop)
    try:
        capture.run()
    except SluicewayError as exc:
        console.print(f"[red]capture stopped:[/red] {exc}")
        raise typer.Exit(1) from None
    finally:
        if live.is_started:
            live.stop()
    console.print(f"stopped cleanly; {_status_line(spec, capture.stats)}")


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


@contextmanager
def _source(pipeline: str) -> Iterator[tuple[Pipeline, Settings, Any]]:
    """The pipeline, the settings and a connection to its source database."""
    spec = load_pipeline(pipeline)
    settings = load_settings()
    conn = PostgresCapture(settings, spec).connect()
    try:
        yield spec, settings, conn
    finally:
        conn.close()


@capture_app.command("status")
def status(pipeline: PipelineName) -> None:
    """Where capture stands: the replication slot (PostgreSQL: active, retained WAL, lag) or
    the saved binlog position / poll positions."""
    spec = load_pipeline(pipeline)
    if spec.source.kind != "postgres":
        settings = load_settings()
        from streaming.sources.mysql.capture import BinlogPosition
        from streaming.sources.query.capture import QueryCapture

        path = (
            BinlogPosition.path(settings.state_dir, spec.name)
            if spec.source.kind == "mysql"
            else QueryCapture.path(settings.state_dir, spec.name)
        )
        if not path.exists():
            console.print(f"{spec.name}: capture has not run yet ({path} is missing)")
            raise typer.Exit(1)
        console.print(f"{spec.name} ({spec.source.kind}): {path.read_text().strip()}")
        return
    with _source(pipeline) as (spec, _settings, conn):
        health = slot_health(conn, spec.slot)
    if health is None:
        console.print(f"slot {spec.slot} does not exist (capture has not run yet)")
        raise typer.Exit(1)
    console.print(
        f"slot {spec.slot}: {'active' if health.active else 'inactive'}, "
        f"confirmed {format_lsn(health.confirmed_flush_lsn)}, lag {health.lag_bytes:,} bytes, "
        f"WAL retained {health.retained_bytes:,} bytes"
    )


@capture_app.command("snapshot")
def snapshot(
    pipeline: PipelineName,
    table: Annotated[
        list[str], typer.Option("--table", "-t", help="schema.table to re-snapshot (repeatable)")
    ],
) -> None:
    """Re-snapshot tables on the live pipeline (incremental, lock-free, resumable)."""
    with _source(pipeline) as (_spec, _settings, conn):
        request = request_snapshot(conn, table)
    console.print(
        f"requested snapshot {request} of {', '.join(table)}; the running capture does it"
    )


@capture_app.command("drop-slot")
def drop(
    pipeline: PipelineName,
    yes: Annotated[bool, typer.Option("--yes", help="really drop it")] = False,
) -> None:
    """Drop the pipeline's replication slot on purpose (the next run snapshots again)."""
    if not yes:
        slot = load_pipeline(pipeline).slot
        console.print(f"this drops slot {slot}; changes not yet captured are lost. Add --yes")
        raise typer.Exit(1)
    with _source(pipeline) as (spec, settings, conn):
        dropped = drop_slot(conn, spec.slot)
    CaptureState.path(settings.state_dir, spec.name).unlink(missing_ok=True)
    console.print(f"dropped slot {spec.slot}" if dropped else f"slot {spec.slot} did not exist")
