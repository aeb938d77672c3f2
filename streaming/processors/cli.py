"""``sluiceway process run``: run a pipeline's stream processors until SIGTERM or Ctrl-C."""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live

from sluiceway.errors import SluicewayError
from sluiceway.pipeline import load_pipeline
from sluiceway.settings import load_settings
from streaming.processors.app import Processing

__all__ = ["process_app"]

console = Console()
process_app = typer.Typer(help="Stream processing into enrichment topics.", no_args_is_help=True)


@process_app.command("run")
def run(
    pipeline: Annotated[str, typer.Argument(help="pipeline name (pipelines/<name>.yaml) or path")],
) -> None:
    """Process until SIGTERM or Ctrl-C (the open transaction is committed first)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        processing = Processing(load_settings(), load_pipeline(pipeline))
    except SluicewayError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None

    def stop(_signum: int, _frame: Any) -> None:
        processing.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            processing.run()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            processing.stop.set()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    started = time.monotonic()
    with Live(console=console, refresh_per_second=2) as live:
        while thread.is_alive():
            stats = processing.stats
            elapsed = max(1e-3, time.monotonic() - started)
            live.update(
                f"processing: {stats.events_in:,} in ({stats.events_in / elapsed:,.0f}/s), "
                f"{stats.events_out:,} out, {stats.late:,} late, {stats.dead_letters:,} dead"
            )
            thread.join(0.5)
    if errors:
        console.print(f"[red]processing stopped:[/red] {errors[0]}")
        raise typer.Exit(1)
