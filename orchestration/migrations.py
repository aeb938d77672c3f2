"""Migration jobs: the phases of a plan as Dagster ops, gates as failing ops, approval explicit.

For every plan in ``migrations/plans/``:

- ``migrate_<plan>_replication`` — a supervised stream (like capture streams): the copy and
  catch-up before the cutover, reverse replication after it;
- ``migrate_<plan>_cutover`` — ``prepare`` → ``lag_gate`` → ``parity_gate`` → ``approval`` →
  ``cutover`` → report. A red gate fails its op, so nothing after it runs (nothing is fenced);
  ``approval`` needs the approver's name in the run config — the launchpad asks for it;
- ``migrate_<plan>_rollback`` — ``approval`` → ``rollback`` → report.

The report (`migrations.report`) is attached to the last op as markdown metadata, with the
write-unavailable window as a number.
"""

from typing import Any

from dagster import (
    Config,
    Failure,
    In,
    JobDefinition,
    MetadataValue,
    Nothing,
    OpExecutionContext,
    Output,
    job,
    op,
)
from pydantic import Field

from migrations.plan import MigrationPlan
from migrations.report import render
from migrations.runner import CutoverFailed, CutoverRefused, MigrationRunner
from orchestration.resources import SluicewayResource
from orchestration.streams import Worker, stream_job

__all__ = ["migration_jobs"]


class Approval(Config):
    """Who approves the fence (recorded in the migration's events)."""

    approved_by: str = Field(description="your name: approving fences the database")


def _runner(sluiceway: SluicewayResource, plan: MigrationPlan) -> MigrationRunner:
    return MigrationRunner(sluiceway.settings(), plan)


def _switch(runner: MigrationRunner, back: bool) -> Output[None]:
    """The cutover (or rollback) itself, approved by the op before it; its report."""
    try:
        result = runner.rollback(approved=True) if back else runner.cutover(approved=True)
    except (CutoverRefused, CutoverFailed) as exc:
        raise Failure(str(exc)) from exc
    return _report(runner, result)


def _report(runner: MigrationRunner, value: dict[str, Any]) -> Output[None]:
    return Output(
        None,
        metadata={
            "write-unavailable window (s)": float(value.get("write_unavailable_seconds", 0)),
            "drain (s)": float(value.get("drain_seconds", 0)),
            "report": MetadataValue.md(render(runner.plan, runner.state)),
        },
    )


def migration_jobs(plan: MigrationPlan) -> list[JobDefinition]:
    """The replication stream, the cutover job and the rollback job of one plan."""
    prefix = f"migrate_{plan.name}"

    def numbers(worker: Worker) -> dict[str, Any]:
        runner: Any = worker
        stats = runner.capture.stats if runner.capture is not None else None
        if stats is None:
            return {"phase": runner.state.phase}
        return {
            "phase": runner.state.phase,
            "captured": stats.events,
            "lag (ms)": stats.lag_ms(),
            "snapshot rows": stats.snapshot_rows,
        }

    replication = stream_job(
        f"{prefix}_replication",
        f"Migration {plan.name}: copy and catch up (after the cutover: reverse replication)",
        lambda settings: MigrationRunner(settings, plan),
        numbers,
        [],
        {"sluiceway/migration": plan.name},
    )

    @op(name=f"{prefix}_prepare", description="create the target schema (idempotent)")
    def prepare(context: OpExecutionContext, sluiceway: SluicewayResource) -> None:
        tables = _runner(sluiceway, plan).prepare()
        context.log.info(f"prepared {len(tables)} tables: {', '.join(tables)}")

    @op(name=f"{prefix}_lag_gate", ins={"after": In(Nothing)})
    def lag_gate(context: OpExecutionContext, sluiceway: SluicewayResource) -> None:
        runner = _runner(sluiceway, plan)
        took = runner.wait_applied(runner.source_position(), plan.gates.max_lag_seconds)
        if took is None:
            raise Failure(
                f"lag gate red: the target is more than {plan.gates.max_lag_seconds:g} s behind "
                f"(is {prefix}_replication running?)"
            )
        context.log.info(f"lag gate green: caught up in {took:.2f} s")

    @op(name=f"{prefix}_parity_gate", ins={"after": In(Nothing)})
    def parity_gate(context: OpExecutionContext, sluiceway: SluicewayResource) -> None:
        runner = _runner(sluiceway, plan)
        if not runner._parity() and plan.gates.parity == "required":
            last = runner.state.verifications[-1]["tables"]
            red = {t: v["differing_keys"][:5] for t, v in last.items() if v["differing_ranges"]}
            raise Failure(f"parity gate red: {red}", metadata={"red tables": str(red)})
        context.log.info("parity gate green")

    @op(name=f"{prefix}_approval", ins={"after": In(Nothing)})
    def approval(context: OpExecutionContext, config: Approval) -> None:
        context.log.info(f"cutover of {plan.name} approved by {config.approved_by}")

    @op(name=f"{prefix}_fence_and_switch", ins={"after": In(Nothing)})
    def fence_and_switch(sluiceway: SluicewayResource) -> Output[None]:
        return _switch(_runner(sluiceway, plan), back=False)

    @job(
        name=f"{prefix}_cutover",
        description=f"Cut {plan.source.database} over to {plan.target.database}: gates, "
        "approval, fence, drain, verify, switch",
        tags={"sluiceway/migration": plan.name},
    )
    def cutover_job() -> None:
        fence_and_switch(after=approval(after=parity_gate(after=lag_gate(after=prepare()))))

    @op(name=f"{prefix}_rollback_approval")
    def rollback_approval(context: OpExecutionContext, config: Approval) -> None:
        context.log.info(f"rollback of {plan.name} approved by {config.approved_by}")

    @op(name=f"{prefix}_switch_back", ins={"after": In(Nothing)})
    def rollback(sluiceway: SluicewayResource) -> Output[None]:
        return _switch(_runner(sluiceway, plan), back=True)

    @job(
        name=f"{prefix}_rollback",
        description=f"Make {plan.source.database} the primary again, with the changes made on "
        f"{plan.target.database} carried back",
        tags={"sluiceway/migration": plan.name},
    )
    def rollback_job() -> None:
        rollback(after=rollback_approval())

    return [replication, cutover_job, rollback_job]
