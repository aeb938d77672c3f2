"""The control plane from the command line: ``sluiceway ui | demo | stream | backfill``.

``ui`` serves the Dagster UI and daemon (DAGSTER_HOME in the state directory). ``demo`` is the
main job: the demo shop database with a live workload, its capture and DuckDB load running as
supervised streams, and the UI — Ctrl-C stops it all cleanly. ``stream`` starts, stops and
shows streams (the supervisor sensor acts on the desired state within seconds). ``backfill``
replays a time window of a pipeline's topics into a target, as the partitioned batch-load
asset does, with a progress bar.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from loaders.runner import Loader
from loaders.targets import open_sink
from orchestration.batch import archive_of
from orchestration.demo import Workload, create_shop
from orchestration.instance import dagster_home
from orchestration.snapshots import capture_stream_name
from orchestration.streams import StreamStore
from orchestration.workers import load_stream_name, process_stream_name
from sluiceway.errors import SluicewayError
from sluiceway.pipeline import Pipeline, list_pipelines, load_pipeline
from sluiceway.settings import REPO_ROOT, Settings, load_settings
from stack.manager import Stack

__all__ = ["backfill", "demo", "stream_app", "ui"]

console = Console()
stream_app = typer.Typer(
    help="Start, stop and watch streams (capture, loads).", no_args_is_help=True
)


def _dagster(settings: Settings, log: Path | None = None) -> subprocess.Popen[bytes]:
    """``dagster dev`` (webserver and daemon) in its own process group; its output goes to
    ``log`` if given."""
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home(settings))}
    dagster = Path(sys.executable).parent / "dagster"
    argv = [
        str(dagster),
        "dev",
        "-w",
        str(REPO_ROOT / "workspace.yaml"),
        "-h",
        settings.dagster.host,
        "-p",
        str(settings.dagster.port),
    ]
    if log is None:
        return subprocess.Popen(argv, env=env, cwd=REPO_ROOT, start_new_session=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            argv, env=env, cwd=REPO_ROOT, start_new_session=True, stdout=out, stderr=out
        )


def _stop_dagster(process: subprocess.Popen[bytes]) -> None:
    """Interrupt ``dagster dev`` and its children; terminate, then kill what lingers."""
    for sig, wait in ((signal.SIGINT, 15), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):  # the webserver, the code server
        os.killpg(process.pid, signal.SIGKILL)


def ui() -> None:
    """Serve the Dagster UI and daemon until Ctrl-C (DAGSTER_HOME in the state directory)."""
    settings = load_settings()
    console.print(
        f"Dagster UI on http://{settings.dagster.host}:{settings.dagster.port} (Ctrl-C stops)"
    )
    process = _dagster(settings)
    try:
        process.wait()
    except KeyboardInterrupt:
        _stop_dagster(process)


def _streams(pipeline: Pipeline) -> list[str]:
    processing = [process_stream_name(pipeline)] if pipeline.processors else []
    return [capture_stream_name(pipeline), *processing] + [
        load_stream_name(pipeline, t) for t in pipeline.targets
    ]


def _stop_streams(store: StreamStore, names: list[str], timeout: float = 90.0) -> None:
    for name in names:
        store.want(name, "stopped")
    deadline = time.monotonic() + timeout
    with console.status("stopping streams (flush, confirm positions)"):
        while time.monotonic() < deadline:
            states = [store.read(n) for n in names]
            if not any(s.running() for s in states):
                return
            time.sleep(0.5)
    console.print("[yellow]some streams did not stop in time[/yellow]")


@stream_app.command("start")
def stream_start(
    pipeline: Annotated[str, typer.Argument(help="pipeline name")],
    stream: Annotated[str | None, typer.Argument(help="capture, or load_<target>")] = None,
) -> None:
    """Want a pipeline's streams running (all of them, or one): the supervisor launches them."""
    spec = load_pipeline(pipeline)
    store = StreamStore(load_settings())
    names = [f"{spec.name}_{stream}"] if stream else _streams(spec)
    for name in names:
        store.want(name, "running")
        console.print(f"{name}: wanted running (the supervisor launches it within seconds)")


@stream_app.command("stop")
def stream_stop(
    pipeline: Annotated[str, typer.Argument(help="pipeline name")],
    stream: Annotated[str | None, typer.Argument(help="capture, or load_<target>")] = None,
) -> None:
    """Stop a pipeline's streams gracefully (flush, confirm positions) and wait for them."""
    spec = load_pipeline(pipeline)
    names = [f"{spec.name}_{stream}"] if stream else _streams(spec)
    _stop_streams(StreamStore(load_settings()), names)
    console.print(f"stopped: {', '.join(names)}")


@stream_app.command("status")
def stream_status() -> None:
    """Every stream: desired state, heartbeat, restarts, last failure and its numbers."""
    settings = load_settings()
    store = StreamStore(settings)
    table = Table(
        "stream", "desired", "running", "heartbeat", "restarts", "numbers", "last failure"
    )
    names = sorted({n for p in list_pipelines(settings.pipelines_dir) for n in _streams(p)})
    for name in names:
        state = store.read(name)
        age = f"{time.time() - state.heartbeat:,.0f} s ago" if state.heartbeat else "never"
        running = "yes" if state.running() else "no"
        table.add_row(
            name, state.desired, running, age, str(state.restarts), (state.last_failure or "")[:60]
        )
    console.print(table)
    for name in names:
        numbers = store.read(name).numbers
        if numbers:
            console.print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in numbers.items()))


def demo(
    rate: Annotated[float, typer.Option(help="workload transactions per second")] = 5.0,
    keep_stack: Annotated[bool, typer.Option(help="leave the servers running on exit")] = False,
) -> None:
    """The main job: the demo shop with a live workload, captured and loaded into DuckDB by
    supervised streams, and the Dagster UI. Ctrl-C stops everything cleanly."""
    settings = load_settings()
    stack = Stack(settings)
    console.rule("Sluiceway demo")
    stack.up(["postgres", "kafka"], log=console.print)
    created = create_shop(settings)
    console.print("shop database " + ("created and seeded" if created else "already there"))
    workload = Workload(settings, rate=rate)
    workload.start()
    spec = load_pipeline("shop")
    store = StreamStore(settings)
    streams = _streams(spec)
    for name in streams:
        store.want(name, "running")
    log = dagster_home(settings) / "dagster-dev.log"
    process = _dagster(settings, log)
    url = f"http://{settings.dagster.host}:{settings.dagster.port}"
    console.print(
        f"Dagster UI: {url} — the supervisor starts {', '.join(streams)}; "
        f"the workload writes ~{rate:g} transactions/s. Dagster's log: {log}. "
        "Ctrl-C stops everything."
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    started = time.monotonic()
    while not stop.is_set() and process.poll() is None:
        stop.wait(5.0)
        if not stop.is_set():
            console.print(_line(store, streams, workload, time.monotonic() - started))
    console.print("stopping: workload, streams, Dagster")
    workload.stop.set()
    _stop_streams(store, streams)
    _stop_dagster(process)
    if not keep_stack:
        stack.down(log=console.print)
    console.print(f"stopped; the workload wrote {workload.transactions:,} transactions")


def _line(store: StreamStore, streams: list[str], workload: Workload, elapsed: float) -> str:
    parts = [f"{elapsed:,.0f} s: workload {workload.transactions:,} tx"]
    for name in streams:
        state = store.read(name)
        numbers = state.numbers
        if not state.fresh():
            parts.append(f"{name} starting")
        elif "events" in numbers:
            parts.append(f"{name} {numbers.get('phase')} {numbers['events']:,} events")
        elif "events in" in numbers:
            parts.append(f"{name} {numbers['events in']:,} in, {numbers['events out']:,} out")
        else:
            parts.append(
                f"{name} {numbers.get('changes loaded', 0):,} loaded, "
                f"lag {numbers.get('consumer lag (records)', 0):,}"
            )
    return " | ".join(parts)


def backfill(
    pipeline: Annotated[str, typer.Argument(help="pipeline name")],
    start: Annotated[str, typer.Option("--from", help="ISO time with zone, inclusive")],
    end: Annotated[str, typer.Option("--to", help="ISO time with zone, exclusive")],
    target: Annotated[str | None, typer.Option(help="target kind (default: the only one)")] = None,
) -> None:
    """Replay a time window of a pipeline's topics into a target (what a partition backfill
    does); loading a window twice changes nothing."""
    settings = load_settings()
    spec = load_pipeline(pipeline)
    chosen = spec.target(target)
    window = []
    for text in (start, end):
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            raise typer.BadParameter(f"{text!r} needs a time zone, e.g. {text}+00:00")
        window.append(int(moment.timestamp() * 1000))
    sink = open_sink(settings, spec, chosen)
    loader = Loader(settings, spec, sink, mode=chosen.mode, batch_rows=chosen.batch_rows)
    progress = Progress(
        TextColumn(f"backfill into {chosen.kind}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} records"),
        TimeRemainingColumn(),
        console=console,
    )
    task = progress.add_task("backfill", total=None)
    try:
        with progress:
            rows = loader.load_window(
                window[0],
                window[1],
                progress=lambda done, total: progress.update(task, completed=done, total=total),
                archive=archive_of(settings, spec, chosen),
            )
    except SluicewayError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    finally:
        sink.close()
    console.print(f"loaded {rows:,} changes from {start} to {end} into {chosen.kind}")
