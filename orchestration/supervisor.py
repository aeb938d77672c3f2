"""The supervisor sensor: streams whose desired state is ``running`` are kept running.

Every ``INTERVAL`` seconds, for each stream job:

- a run queued, starting, or started with a fresh heartbeat: nothing to do;
- a run started but silent for `HEARTBEAT_SECONDS_STALE` (its process was killed, the machine
  slept): the run is marked failed with that reason, then handled as failed;
- no run, or the last one failed or ended while still wanted: relaunch after a backoff of
  5 s doubling per consecutive restart up to 5 minutes (the count resets after 10 minutes of
  health). The launch carries the reason in its tags (``sluiceway/restart-reason``), and the
  state file keeps the last failure; a terminal error (bad settings, a dropped slot) sets the
  desired state to ``failed`` instead, which needs a person.
"""

from __future__ import annotations

import time

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    JobDefinition,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from orchestration.streams import StreamState, StreamStore
from sluiceway.settings import load_settings

__all__ = ["INTERVAL", "backoff_seconds", "supervisor"]

INTERVAL = 5
HEALTHY_RESET_SECONDS = 600.0
_WAITING = {DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING}


def backoff_seconds(restarts: int) -> float:
    """How long to wait before the next relaunch after ``restarts`` consecutive ones."""
    return float(min(5 * 2**restarts, 300))


def supervisor(jobs: list[JobDefinition]) -> SensorDefinition:
    """The sensor keeping ``jobs`` (stream jobs) running as their desired state says."""

    @sensor(
        name="stream_supervisor",
        jobs=jobs,
        minimum_interval_seconds=INTERVAL,
        default_status=DefaultSensorStatus.RUNNING,
        description="Relaunches streams that should run but died, with backoff (see docs).",
    )
    def stream_supervisor(context: SensorEvaluationContext) -> SensorResult | SkipReason:
        store = StreamStore(load_settings())
        requests = []
        now = time.time()
        for definition in jobs:
            name = definition.name
            state = store.read(name)
            if state.desired != "running":
                continue
            runs = context.instance.get_runs(RunsFilter(job_name=name), limit=1)
            run = runs[0] if runs else None
            if run is not None and run.status in _WAITING:
                continue
            if run is not None and run.status == DagsterRunStatus.STARTED:
                if state.run_id == run.run_id and state.fresh(now):
                    if state.restarts and now - (state.started or now) > HEALTHY_RESET_SECONDS:
                        store.update(name, _healthy)
                    continue
                if state.run_id == run.run_id or now - run_start(context, run.run_id) > 60:
                    context.instance.report_run_failed(run, f"{name}: {_LOST}")
                    state = store.update(name, _lost)
                else:
                    continue  # started moments ago: the worker has not reported yet
            stopped = run is not None and run.status == DagsterRunStatus.SUCCESS
            if (
                run is not None
                and state.run_id == run.run_id
                and not stopped
                and not _reported(state)
            ):
                # The run failed without its worker saying why: the process died.
                ended = run.status.value.lower()
                state = store.update(name, lambda s, e=ended: _died(s, e))  # type: ignore[misc]
            if stopped:
                reason = "wanted running again after a clean stop"
            else:
                reason = state.last_failure or "never started"
            wait = backoff_seconds(state.restarts)
            if state.last_failure_at and now - state.last_failure_at < wait:
                context.log.info(
                    f"{name}: relaunch in {wait - (now - state.last_failure_at):.0f} s"
                )
                continue
            store.update(name, _restarting)
            context.log.info(f"{name}: relaunching ({reason})")
            requests.append(
                RunRequest(
                    run_key=f"{name}:{int(now * 1000)}",
                    job_name=name,
                    tags={
                        "sluiceway/restart": str(state.restarts + 1),
                        "sluiceway/restart-reason": reason[:200],
                    },
                )
            )
        if not requests:
            return SkipReason("every wanted stream is running")
        return SensorResult(run_requests=requests)

    return stream_supervisor


def run_start(context: SensorEvaluationContext, run_id: str) -> float:
    """When a run started (its record's update time if it has no start time)."""
    record = context.instance.get_run_record_by_id(run_id)
    if record is None:
        return 0.0
    return record.start_time or record.update_timestamp.timestamp()


def _healthy(state: StreamState) -> None:
    state.restarts = 0


_LOST = "worker heartbeat lost (process killed?)"


def _lost(state: StreamState) -> None:
    state.last_failure = _LOST
    state.last_failure_at = time.time()


def _reported(state: StreamState) -> bool:
    """Whether the current run's worker recorded its failure itself."""
    return bool(state.last_failure_at and state.started and state.last_failure_at >= state.started)


def _died(state: StreamState, ended: str) -> None:
    state.last_failure = f"worker died without reporting an error (run {ended}; process killed?)"
    state.last_failure_at = time.time()


def _restarting(state: StreamState) -> None:
    state.restarts += 1
    if state.last_failure_at is None:
        state.last_failure_at = time.time()
