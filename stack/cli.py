"""``sluiceway stack``: install, start, stop and inspect the local stack."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from sluiceway.errors import SluicewayError
from sluiceway.settings import Settings, load_settings
from stack.manager import SERVICES, Stack
from stack.process import tail

__all__ = ["app"]

app = typer.Typer(help="The local stack of real servers on 127.0.0.1.", no_args_is_help=True)
console = Console()

Services = Annotated[
    list[str] | None, typer.Argument(help=f"services (default: all managed): {', '.join(SERVICES)}")
]
Brokers = Annotated[
    int | None, typer.Option("--brokers", help="Kafka brokers: 1, or 3 for fault tests")
]


def _settings(brokers: int | None) -> Settings:
    if brokers:
        return load_settings(kafka={"brokers": brokers})
    return load_settings()


def _fail(exc: SluicewayError) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
    return typer.Exit(1)


@app.command()
def install(services: Services = None, brokers: Brokers = None) -> None:
    """Install and fetch everything the services need (apt, mvn, virtualenvs); idempotent."""
    try:
        Stack(_settings(brokers)).install(services or (), log=console.print)
    except SluicewayError as exc:
        raise _fail(exc) from None
    console.print("everything installed")


@app.command()
def up(services: Services = None, brokers: Brokers = None) -> None:
    """Start services (idempotent) and wait until each is healthy."""
    try:
        stack = Stack(_settings(brokers))
        with console.status("starting " + ", ".join(s.name for s in stack.select(services or ()))):
            stack.up(services or (), log=console.print)
    except SluicewayError as exc:
        raise _fail(exc) from None


@app.command()
def down(services: Services = None) -> None:
    """Stop the services this stack started (by pid file) and wait for them to exit."""
    try:
        stopped = Stack(load_settings()).down(services or (), log=console.print)
    except SluicewayError as exc:
        raise _fail(exc) from None
    if not stopped:
        console.print("nothing was running")


@app.command()
def status(services: Services = None, brokers: Brokers = None) -> None:
    """A table of service, address, pid and health. Exits 1 if any is unhealthy."""
    try:
        rows = Stack(_settings(brokers)).status(services or ())
    except SluicewayError as exc:
        raise _fail(exc) from None
    table = Table("service", "address", "pid", "health", "detail")
    for row in rows:
        health = "[green]healthy[/green]" if row.healthy else "[red]down[/red]"
        table.add_row(
            row.name, row.address, ",".join(map(str, row.pids)) or "-", health, row.detail
        )
    console.print(table)
    if not all(row.healthy for row in rows):
        raise typer.Exit(1)


@app.command()
def logs(
    service: Annotated[str, typer.Argument(help="the service")],
    lines: Annotated[int, typer.Option("-n", help="lines from the end")] = 50,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="keep printing")] = False,
) -> None:
    """Print the end of a service's log files."""
    stack = Stack(load_settings())
    if service not in stack.services:
        raise _fail(SluicewayError(f"unknown service {service!r}; choose from {list(SERVICES)}"))
    files = stack.services[service].log_files()
    if not files:
        console.print(f"no logs for {service} yet")
        return
    for path in files:
        typer.echo(f"==> {path} <==")
        typer.echo(tail(path, lines))
    if follow:
        _follow(files)


def _follow(files: list[Path]) -> None:
    offsets = {path: path.stat().st_size for path in files}
    try:
        while True:
            for path, offset in offsets.items():
                size = path.stat().st_size
                if size > offset:
                    with path.open("rb") as handle:
                        handle.seek(offset)
                        typer.echo(handle.read().decode(errors="replace"), nl=False)
                    offsets[path] = size
            time.sleep(0.5)
    except KeyboardInterrupt:
        return
