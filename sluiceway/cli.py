"""The ``sluiceway`` command: one front door to the stack, pipelines and the control plane."""

from __future__ import annotations

import typer
from rich.console import Console

from loaders.cli import load_app
from migrations.cli import migrate_app
from orchestration.cli import backfill, demo, stream_app, ui
from sluiceway.errors import SluicewayError
from stack.cli import app as stack_app
from streaming.cli import capture_app, pipelines_app
from streaming.processors.cli import process_app

__all__ = ["app", "main"]

app = typer.Typer(
    help="Sluiceway: database changes through Kafka into warehouses, orchestrated by Dagster.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(stack_app, name="stack")
app.add_typer(pipelines_app, name="pipelines")
app.add_typer(capture_app, name="capture")
app.add_typer(process_app, name="process")
app.add_typer(load_app, name="load")
app.add_typer(stream_app, name="stream")
app.add_typer(migrate_app, name="migrate")
app.command()(ui)
app.command()(demo)
app.command()(backfill)


def main() -> None:
    """Entry point of the console script: Sluiceway's own errors print as one clear line."""
    try:
        app()
    except SluicewayError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}", highlight=False)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
