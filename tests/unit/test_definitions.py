"""The single Dagster Definitions object loads and validates."""

from __future__ import annotations

from dagster import Definitions

from orchestration.definitions import defs


def test_definitions_load() -> None:
    Definitions.validate_loadable(defs)
    assert defs.resolve_job_def("stack_health") is not None
