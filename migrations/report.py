"""The migration report: what moved, whether it matched, and how long writes were unavailable.

Rendered as markdown from the migration's state (`sluiceway migrate report`, and as the
Dagster run's metadata): the plan, each table with its rows and last parity result, lag over
time while copying, the recorded events, and the fence/switch timestamps with the
write-unavailable window of the cutover (and of a rollback).
"""

from __future__ import annotations

from typing import Any

from migrations.plan import MigrationPlan
from migrations.runner import MigrationState

__all__ = ["render"]


def _window(event: dict[str, Any]) -> str:
    return (
        f"fenced {event.get('fence_at')}, switched {event.get('switch_at')}: writes unavailable "
        f"for **{event.get('write_unavailable_seconds', 0):.2f} s** "
        f"(drain {event.get('drain_seconds', 0):.2f} s)"
    )


def render(plan: MigrationPlan, state: MigrationState) -> str:
    """The report as markdown."""
    lines = [
        f"# Migration {plan.name}",
        "",
        f"{plan.source.kind} `{plan.source.database}` → PostgreSQL "
        f"`{plan.target.database}.{plan.target.schema_name}`; phase **{state.phase}**, "
        f"primary: **{state.primary}**.",
        "",
    ]
    if state.verifications:
        last = state.verifications[-1]
        verdict = "green" if last["ok"] else "RED"
        lines += [
            f"## Tables (last verification {last['at']}: {verdict})",
            "",
            "| table | source rows | target rows | differing key ranges | differing keys |",
            "|---|---:|---:|---:|---|",
        ]
        for name, found in last["tables"].items():
            keys = ", ".join(str(k) for k in found["differing_keys"][:5]) or "-"
            lines.append(
                f"| {name} | {found['source_rows']:,} | {found['target_rows']:,} | "
                f"{found['differing_ranges']} | {keys} |"
            )
        checks = len(state.verifications)
        green = sum(1 for v in state.verifications if v["ok"])
        lines += ["", f"{checks} verifications recorded, {green} green.", ""]
    if state.cutover:
        lines += ["## Cutover", "", _window(state.cutover), ""]
        position = state.cutover.get("position") or {}
        if position:
            lines += [
                f"Source position at the fence: binlog file {position.get('file_number')}, "
                f"offset {position.get('pos')}.",
                "",
            ]
    rollback = next((e for e in reversed(state.events) if e["what"] == "rolled back"), None)
    if rollback:
        lines += ["## Rollback", "", _window(rollback), ""]
    if state.lag:
        lines += [
            "## Lag while copying",
            "",
            "| at | lag (ms) | captured | applied |",
            "|---|---:|---:|---:|",
        ]
        step = max(1, len(state.lag) // 20)
        for sample in state.lag[::step]:
            lines.append(
                f"| {sample['at']} | {sample['lag_ms']:,} | {sample['captured']:,} | "
                f"{sample['applied']:,} |"
            )
        lines.append("")
    lines += ["## Events", "", "| at | event |", "|---|---|"]
    for event in state.events:
        details = ", ".join(f"{k}={v}" for k, v in event.items() if k not in ("at", "what"))
        lines.append(f"| {event['at']} | {event['what']}{' — ' + details if details else ''} |")
    return "\n".join(lines) + "\n"
