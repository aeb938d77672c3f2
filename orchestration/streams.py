"""Streaming assets: capture and continuous loads as never-ending Dagster runs, supervised.

Dagster has no never-ending asset, so a stream is a job whose one op runs the worker
(a capture, a continuous `Loader`) in a thread until told to stop, and reports while
it runs:

- every few seconds a heartbeat into the stream's state file (``<state>/streams/<job>.json``:
  desired state, run, pid, heartbeat, restarts, last failure, the worker's numbers);
- every ``REPORT_SECONDS`` an `AssetObservation` on each asset the worker feeds (position,
  lag, throughput, retained WAL, dead letters), shown on the asset in the UI.

Starting: launch the job (UI, `sluiceway stream start`, or the supervisor). Stopping: terminate
the run in the UI, or `sluiceway stream stop` (desired state ``stopped``, seen within a
second); either way the worker stops gracefully — capture flushes Kafka and confirms its
position, a loader finishes its batch — and the run ends. The supervisor sensor
(`orchestration.supervisor`) relaunches a stream whose desired state is ``running`` but whose
run died (failed, or its heartbeat stopped: a killed process), with backoff, and records why.
"""

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dagster import (
    AssetKey,
    AssetObservation,
    Failure,
    JobDefinition,
    OpExecutionContext,
    job,
    op,
)
from dagster._core.errors import DagsterExecutionInterruptedError

from orchestration.resources import SluicewayResource
from sluiceway.errors import Terminal
from sluiceway.settings import Settings
from streaming.sources.statefile import locked, process_alive, save_state

__all__ = ["HEARTBEAT_STALE_SECONDS", "StreamState", "StreamStore", "Worker", "stream_job"]

REPORT_SECONDS = 10.0
HEARTBEAT_SECONDS = 2.0
HEARTBEAT_STALE_SECONDS = 30.0


@dataclass
class StreamState:
    """What the state file of one stream holds."""

    name: str
    desired: str = "stopped"  # running | stopped | failed (a terminal error: needs a person)
    run_id: str | None = None
    pid: int | None = None
    started: float | None = None
    heartbeat: float | None = None
    restarts: int = 0
    last_failure: str | None = None
    last_failure_at: float | None = None
    numbers: dict[str, Any] = field(default_factory=dict)

    def running(self) -> bool:
        """Whether the worker reports and its process is alive."""
        return self.fresh() and process_alive(self.pid)

    def fresh(self, now: float | None = None) -> bool:
        """Whether the worker reported within the staleness limit."""
        now = time.time() if now is None else now
        return self.heartbeat is not None and now - self.heartbeat < HEARTBEAT_STALE_SECONDS


class StreamStore:
    """The state files of the streams, read and written under a file lock (the worker, the
    supervisor and the CLI share them)."""

    def __init__(self, settings: Settings) -> None:
        self.directory = settings.state_dir / "streams"
        self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    def read(self, name: str) -> StreamState:
        try:
            data = json.loads(self._path(name).read_text())
        except (OSError, ValueError):
            return StreamState(name)
        return StreamState(**{k: v for k, v in data.items() if k in StreamState.__annotations__})

    def update(self, name: str, change: Callable[[StreamState], None]) -> StreamState:
        """Apply ``change`` to the state atomically; the new state."""
        with locked(self._path(name)):
            state = self.read(name)
            change(state)
            save_state(self._path(name), asdict(state), default=str)
            return state

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.directory.glob("*.json"))

    def want(self, name: str, desired: str) -> StreamState:
        """Set the desired state (``running`` resets the restart count)."""

        def change(state: StreamState) -> None:
            state.desired = desired
            if desired == "running":
                state.restarts = 0

        return self.update(name, change)


class Worker(Protocol):
    """What a stream runs: capture or a continuous loader."""

    stop: threading.Event

    def run(self) -> None: ...


def stream_job(
    name: str,
    description: str,
    make: Callable[[Settings], Worker],
    numbers: Callable[[Worker], dict[str, Any]],
    keys: list[AssetKey],
    tags: dict[str, str],
) -> JobDefinition:
    """A job whose one op runs ``make(settings)`` until stopped, reporting ``numbers`` on
    ``keys`` (see the module docstring)."""

    @op(
        name=f"{name}_worker",
        description=description,
        tags={"kind": "stream"},
    )
    def worker_op(context: OpExecutionContext, sluiceway: SluicewayResource) -> None:
        settings = sluiceway.settings()
        store = StreamStore(settings)
        run_id = context.run_id
        current = store.read(name)
        if current.run_id not in (None, run_id) and current.running():
            raise Failure(
                f"{name} is already running in run {current.run_id} (process {current.pid}); "
                "stop it first (terminate that run, or `sluiceway stream stop`)"
            )

        def started(state: StreamState) -> None:
            state.desired = "running"
            state.run_id, state.pid = run_id, os.getpid()
            state.started = state.heartbeat = time.time()

        store.update(name, started)
        worker = make(settings)
        errors: list[BaseException] = []

        def work() -> None:
            try:
                worker.run()
            except BaseException as exc:  # noqa: BLE001 - reported by the op below
                errors.append(exc)

        thread = threading.Thread(target=work, name=name, daemon=True)
        thread.start()
        context.log.info(f"{name}: started in process {os.getpid()}")
        last_report = 0.0

        def beat(state: StreamState) -> None:
            if state.run_id == run_id:
                state.heartbeat = time.time()
                state.numbers = numbers(worker)

        try:
            while thread.is_alive():
                thread.join(HEARTBEAT_SECONDS)
                state = store.update(name, beat)
                if state.desired != "running" and not worker.stop.is_set():
                    context.log.info(f"{name}: desired state {state.desired}: stopping")
                    worker.stop.set()
                if time.monotonic() - last_report >= REPORT_SECONDS:
                    last_report = time.monotonic()
                    for key in keys:
                        context.log_event(AssetObservation(key, metadata=numbers(worker)))
        except DagsterExecutionInterruptedError:
            context.log.info(f"{name}: run terminated: stopping gracefully")
            store.want(name, "stopped")
            worker.stop.set()
            thread.join(120)
            raise
        for key in keys:
            context.log_event(AssetObservation(key, metadata=numbers(worker)))
        if errors:
            error = errors[0]

            def failed(state: StreamState) -> None:
                state.last_failure = f"{type(error).__name__}: {error}"[:2000]
                state.last_failure_at = time.time()
                if isinstance(error, Terminal):
                    state.desired = "failed"

            store.update(name, failed)
            raise Failure(
                description=f"{name} stopped: {type(error).__name__}: {error}",
                metadata={"terminal": isinstance(error, Terminal)},
            ) from error
        context.log.info(f"{name}: stopped cleanly")

    @job(name=name, description=description, tags={"sluiceway/stream": name, **tags})
    def stream() -> None:
        worker_op()

    return stream
