"""``sluiceway load``: run a pipeline's loader continuously, or load one time window."""

from __future__ import annotations

import logging
import signal
import threading
import time
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live

from loaders.runner import Loader
from loaders.targets import open_sink
from sluiceway.errors import SluicewayError
from sluiceway.pipeline import load_pipeline
from sluiceway.settings import load_settings

__all__ = ["load_app"]

console = Console()
load_app = typer.Typer(help="Load change topics into targets.", no_args_is_help=True)

PipelineName = Annotated[str, typer.Argument(help="pipeline name (pipelines/<name>.yaml) or path")]
TargetKind = Annotated[
    str | None, typer.Option("--target", help="the pipeline's target kind (default: its only one)")
]


def _loader(pipeline: str, target: str | None) -> Loader:
    settings = load_settings()
    spec = load_pipeline(pipeline)
    chosen = spec.target(target)
    return Loader(
        settings,
        spec,
        open_sink(settings, spec, chosen),
        mode=chosen.mode,
        batch_rows=chosen.batch_rows,
        batch_seconds=chosen.batch_seconds,
    )


@load_app.command("run")
def run(pipeline: PipelineName, target: TargetKind = None) -> None:
    """Load continuously until SIGTERM or Ctrl-C (the current batch is finished first)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        loader = _loader(pipeline, target)
    except SluicewayError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None

    def stop(_signum: int, _frame: Any) -> None:
        loader.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            loader.run()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            loader.stop.set()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    started = time.monotonic()
    with Live(console=console, refresh_per_second=2) as live:
        while thread.is_alive():
            elapsed = max(1e-3, time.monotonic() - started)
            live.update(
                f"loading into {loader.sink.name}: {loader.stats.rows:,} changes in "
                f"{loader.stats.batches:,} batches ({loader.stats.rows / elapsed:,.0f}/s)"
            )
            thread.join(0.5)
    loader.sink.close()
    if errors:
        console.print(f"[red]loader stopped:[/red] {errors[0]}")
        raise typer.Exit(1)


def _millis(text: str) -> int:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise typer.BadParameter(f"{text!r} needs a time zone, e.g. {text}+00:00")
    return int(moment.timestamp() * 1000)


@load_app.command("window")
def window(
    pipeline: PipelineName,
    start: Annotated[str, typer.Option("--from", help="ISO time, inclusive (with zone)")],
    end: Annotated[str, typer.Option("--to", help="ISO time, exclusive (with zone)")],
    target: TargetKind = None,
) -> None:
    """Load the events of one time window (a backfill); loading it twice changes nothing."""
    try:
        loader = _loader(pipeline, target)
        with console.status(f"loading {start} .. {end} into {loader.sink.name}"):
            rows = loader.load_window(_millis(start), _millis(end))
    except SluicewayError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    loader.sink.close()
    console.print(f"loaded {rows:,} changes from {start} to {end} into {loader.sink.name}")
