"""The ``sluiceway`` command: one front door to the stack, pipelines and the control plane.

Each command group lives next to what it runs (``streaming/cli.py``, ``loaders/cli.py``, ...)
and is imported only when it is the one asked for: ``sluiceway capture run`` is a long-running
worker, and it should not carry Dagster, Quix Streams and pyarrow in its memory (~150 MiB) when
it runs none of them. ``sluiceway --help`` imports them all to list them.
"""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console

from sluiceway.errors import SluicewayError

__all__ = ["build", "main"]

# command -> (module, attribute, is a group of commands)
COMMANDS: dict[str, tuple[str, str, bool]] = {
    "stack": ("stack.cli", "app", True),
    "pipelines": ("streaming.cli", "pipelines_app", True),
    "capture": ("streaming.cli", "capture_app", True),
    "process": ("streaming.processors.cli", "process_app", True),
    "load": ("loaders.cli", "load_app", True),
    "stream": ("orchestration.cli", "stream_app", True),
    "migrate": ("migrations.cli", "migrate_app", True),
    "ui": ("orchestration.cli", "ui", False),
    "demo": ("orchestration.cli", "demo", False),
    "backfill": ("orchestration.cli", "backfill", False),
}


def build(command: str | None = None) -> typer.Typer:
    """The command-line app with ``command``'s group only, or every group when None (or when
    ``command`` is not one of them, so that typer names the mistake)."""
    app = typer.Typer(
        help="Sluiceway: database changes through Kafka into warehouses, orchestrated by Dagster.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
    )
    app.callback()(_root)  # a group even with one command in it: `sluiceway ui` stays `ui`
    wanted = [command] if command in COMMANDS else list(COMMANDS)
    for name in wanted:
        module, attribute, group = COMMANDS[name]
        target = getattr(importlib.import_module(module), attribute)
        if group:
            app.add_typer(target, name=name)
        else:
            app.command(name=name)(target)
    return app


def _root() -> None:
    """Sluiceway: database changes through Kafka into warehouses, orchestrated by Dagster."""


def main() -> None:
    """Entry point of the console script: Sluiceway's own errors print as one clear line."""
    command = sys.argv[1] if len(sys.argv) > 1 else None
    try:
        build(command)()
    except SluicewayError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}", highlight=False)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
