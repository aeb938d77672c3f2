"""Migration plans: one small YAML file per move, declared like a pipeline.

A plan names the old database (the source: MariaDB/MySQL or PostgreSQL), the new one (a
PostgreSQL database), the tables, how names map, and the gates a cutover must pass::

    name: legacy_to_pg
    source: {kind: mysql, database: legacy}
    target: {database: legacy_pg, schema: public}
    tables: {include: [legacy.*]}
    gates: {max_lag_seconds: 5, parity: required}
    switch_hook: ./switch-dns.sh          # run at the switch, with SLUICEWAY_PRIMARY set

Plans live in ``migrations/plans/`` (or anywhere, by path). Invalid plans fail at load naming
the file, the field, the value and the fix.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sluiceway.pipeline import MySQLSource, Pipeline, PostgresSource, TableSelection
from sluiceway.settings import REPO_ROOT
from sluiceway.validation import load_spec

__all__ = [
    "PLANS_DIR",
    "Gates",
    "MigrationPlan",
    "MigrationSource",
    "MigrationTarget",
    "list_plans",
    "load_plan",
    "moved_to",
    "record_primary",
]

PLANS_DIR = REPO_ROOT / "migrations" / "plans"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MigrationSource(_Spec):
    """The database being moved off (the primary until the cutover)."""

    kind: Literal["mysql", "postgres"]
    database: str = Field(description="the source database")


class MigrationTarget(_Spec):
    """The PostgreSQL database being moved to."""

    kind: Literal["postgres"] = "postgres"
    database: str = Field(description="the target database (created if missing)")
    schema_name: str = Field("public", description="the schema the tables go into")


class Gates(_Spec):
    """What a cutover requires before it fences the source."""

    max_lag_seconds: float = Field(5.0, gt=0, description="most replication lag allowed")
    parity: Literal["required", "warn"] = Field(
        "required", description="required: every table's counts and checksums must match"
    )
    approval: bool = Field(True, description="an explicit approval before the fence")


class MigrationPlan(_Spec):
    """One database move: copy, catch up, verify, fence, switch, and roll back."""

    name: str = Field(description="lowercase identifier")
    description: str = ""
    source: MigrationSource
    target: MigrationTarget
    tables: TableSelection = Field(description="'schema.table' patterns (MySQL: database.table)")
    naming: Literal["keep", "lower"] = Field("lower", description="target table/column names")
    gates: Gates = Gates()
    switch_hook: str | None = Field(
        None, description="command run at the switch (env SLUICEWAY_PRIMARY, _FENCE_POSITION)"
    )
    drain_timeout_seconds: float = Field(60.0, gt=0, description="longest drain after the fence")
    verify_every_seconds: float = Field(
        300.0, gt=0, description="while copying and catching up, verify parity this often"
    )

    @model_validator(mode="after")
    def _name(self) -> MigrationPlan:
        if not _NAME.match(self.name):
            raise ValueError(f"name {self.name!r} must be lowercase letters, digits and _")
        return self

    def pipeline(self) -> Pipeline:
        """The forward pipeline: capture of the source into ``migrate_<name>.*`` topics."""
        source: MySQLSource | PostgresSource
        # Positions saved every 0.1 s: the drain inside the fence waits on them.
        if self.source.kind == "mysql":
            source = MySQLSource(
                database=self.source.database, tables=self.tables, status_seconds=0.1
            )
        else:
            source = PostgresSource(
                database=self.source.database, tables=self.tables, status_seconds=0.1
            )
        return Pipeline(
            name=f"migrate_{self.name}",
            description=f"migration {self.name}: {self.source.database} -> {self.target.database}",
            source=source,
            topics={"partitions": 3},
        )

    def target_table(self, table: str) -> str:
        """A source table's name in the target."""
        return table.lower() if self.naming == "lower" else table


def load_plan(name_or_path: str | Path, directory: Path = PLANS_DIR) -> MigrationPlan:
    """Load and validate a plan by name (``migrations/plans/<name>.yaml``) or by path.

    Raises:
        ConfigError: naming the file, and each invalid field with its value and fix.
    """
    return load_spec(name_or_path, directory, MigrationPlan, "migration plan")


def list_plans(directory: Path = PLANS_DIR) -> list[MigrationPlan]:
    """Every plan in ``directory``."""
    return [load_plan(path) for path in sorted(directory.glob("*.yaml"))]


def _primaries_path(state_dir: Path) -> Path:
    return state_dir / "migrations" / "primaries.json"


def record_primary(state_dir: Path, plan: MigrationPlan, primary: str) -> None:
    """Record which database of ``plan`` is the primary now (``source`` or ``target``)."""
    from streaming.sources.statefile import load_state, locked, save_state

    path = _primaries_path(state_dir)
    with locked(path):  # every plan's migrations write this one file
        known = load_state(path) or {}
        known[plan.name] = {
            "primary": primary,
            "source": {"kind": plan.source.kind, "database": plan.source.database},
            "target": {"kind": plan.target.kind, "database": plan.target.database},
        }
        save_state(path, known)


def moved_to(state_dir: Path, kind: str, database: str) -> tuple[str, str, str] | None:
    """If a migration cut ``database`` over, (plan, kind, database) of its new primary."""
    from streaming.sources.statefile import load_state

    for name, entry in (load_state(_primaries_path(state_dir)) or {}).items():
        source = entry["source"]
        if entry["primary"] == "target" and (source["kind"], source["database"]) == (
            kind,
            database,
        ):
            return name, entry["target"]["kind"], entry["target"]["database"]
    return None
