"""A job that checks every server of the stack and records the result in the run's logs."""

from dagster import Failure, MetadataValue, OpExecutionContext, job, op

from orchestration.resources import SluicewayResource
from stack.manager import Stack

__all__ = ["stack_health"]


@op(description="Ask each managed service of the stack whether it is healthy.")
def check_stack(context: OpExecutionContext, sluiceway: SluicewayResource) -> None:
    rows = Stack(sluiceway.settings()).status()
    table = "| service | address | health | detail |\n|---|---|---|---|\n" + "\n".join(
        f"| {r.name} | {r.address} | {'healthy' if r.healthy else 'down'} | {r.detail} |"
        for r in rows
    )
    context.log.info("\n" + table)
    down = [r.name for r in rows if not r.healthy]
    if down:
        raise Failure(
            description=f"unhealthy: {', '.join(down)}",
            metadata={"report": MetadataValue.md(table)},
        )


@job(description="Check that every server of the local stack answers.")
def stack_health() -> None:
    check_stack()
