"""``sluiceway migrate``: plan, prepare, start, status, verify, cutover, rollback."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from migrations.plan import load_plan
from migrations.report import render
from migrations.runner import CutoverFailed, CutoverRefused, MigrationRunner
from sluiceway.settings import load_settings

__all__ = ["migrate_app"]

console = Console()
migrate_app = typer.Typer(help="Database-migration cutovers through Kafka.", no_args_is_help=True)

PlanName = Annotated[str, typer.Argument(help="plan name (migrations/plans/<name>.yaml) or path")]


def _runner(plan: str) -> MigrationRunner:
    return MigrationRunner(load_settings(), load_plan(plan))


@migrate_app.command("plan")
def plan_(
    plan: PlanName,
    output: Annotated[str | None, typer.Option("--output", "-o", help="write the DDL here")] = None,
) -> None:
    """Print (or write) the target schema as reviewable SQL."""
    ddl = _runner(plan).ddl()
    if output:
        Path(output).write_text(ddl)
        console.print(f"wrote {output}")
    else:
        console.print(ddl, highlight=False, markup=False)


@migrate_app.command()
def prepare(plan: PlanName) -> None:
    """Create the target database, schema and tables (idempotent)."""
    tables = _runner(plan).prepare()
    console.print(f"prepared {len(tables)} tables: {', '.join(tables)}")


@migrate_app.command()
def start(plan: PlanName) -> None:
    """Copy and catch up (after a cutover: reverse replication) until Ctrl-C/SIGTERM;
    resumable: run it again to continue."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    runner = _runner(plan)

    def stop(_signum: int, _frame: Any) -> None:
        runner.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
        TextColumn("{task.fields[status]}"),
        console=console,
    )
    copied = bars.add_task("copy (rows)", total=1, status="starting")
    loaded = bars.add_task("load (rows)", total=1, status="")
    with bars:

        def progress(r: MigrationRunner) -> None:
            stats = r.capture.stats if r.capture is not None else None
            if stats is None:
                return
            total = max(stats.snapshot_estimate, stats.snapshot_rows, 1)
            status = f"{stats.phase}, {stats.events:,} events, lag {stats.lag_ms():,} ms"
            bars.update(copied, completed=stats.snapshot_rows, total=total, status=status)
            rows = r.loader.stats.rows if r.loader is not None else 0
            applied = r.applier.stats.applied if r.applier is not None else 0
            bars.update(loaded, completed=rows or applied, total=max(stats.events, 1), status="")

        runner.start(progress)
    console.print("stopped; `sluiceway migrate start` resumes")


@migrate_app.command()
def status(plan: PlanName) -> None:
    """The phase, the last verification and the recorded events."""
    runner = _runner(plan)
    state = runner.state
    console.print(f"{runner.plan.name}: phase {state.phase}")
    if state.verifications:
        last = state.verifications[-1]
        console.print(f"last verification {last['at']}: {'green' if last['ok'] else 'RED'}")
    for event in state.events[-10:]:
        console.print(f"  {event['at']} {event['what']}")


@migrate_app.command("verify")
def verify_(plan: PlanName) -> None:
    """Compare every table (counts, checksums per key range, differing keys); exit 1 if red."""
    runner = _runner(plan)
    ok = runner.verify()
    last = runner.state.verifications[-1]
    table = Table("table", "source rows", "target rows", "differ", "first differing keys")
    for name, found in last["tables"].items():
        table.add_row(
            name,
            f"{found['source_rows']:,}",
            f"{found['target_rows']:,}",
            str(found["missing_in_target"] + found["extra_in_target"] + found["different_values"]),
            ", ".join(str(k) for k in found["differing_keys"][:5]) or "-",
        )
    console.print(table)
    console.print("[green]parity green[/green]" if ok else "[red]parity red[/red]")
    if not ok:
        raise typer.Exit(1)


Approve = Annotated[bool, typer.Option("--approve", help="the explicit approval")]


def _switch(plan: str, approve: bool, back: bool) -> None:
    runner = _runner(plan)
    action, primary = ("rollback", "target") if back else ("cutover", "source")
    try:
        result = runner.rollback(approved=approve) if back else runner.cutover(approved=approve)
    except CutoverRefused as exc:
        console.print(f"[yellow]{action} refused:[/yellow] {exc}")
        raise typer.Exit(2) from None
    except CutoverFailed as exc:
        console.print(f"[red]{action} failed, the {primary} is still the primary:[/red] {exc}")
        raise typer.Exit(1) from None
    now = "source" if back else "target"
    console.print(
        f"{action} done at {result['switch_at']}: the {now} is the primary; writes were "
        f"unavailable for {result['write_unavailable_seconds']:.2f} s"
    )


@migrate_app.command()
def cutover(plan: PlanName, approve: Approve = False) -> None:
    """Gates (lag, parity, approval), fence the source, drain, verify, switch (see README)."""
    _switch(plan, approve, back=False)


@migrate_app.command()
def rollback(plan: PlanName, approve: Approve = False) -> None:
    """After a cutover: fence the new primary, drain reverse replication, verify, and make the
    old source the primary again."""
    _switch(plan, approve, back=True)


@migrate_app.command()
def report(
    plan: PlanName,
    output: Annotated[str | None, typer.Option("--output", "-o", help="write it here")] = None,
) -> None:
    """The migration report (markdown): tables, parity, lag, fence/switch, the window."""
    runner = _runner(plan)
    text = render(runner.plan, runner.state)
    if output:
        Path(output).write_text(text)
        console.print(f"wrote {output}")
    else:
        console.print(text, highlight=False, markup=False)
