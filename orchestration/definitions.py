"""The one Dagster `Definitions` object of Sluiceway; workspace.yaml points here."""

from __future__ import annotations

from dagster import Definitions

from orchestration.resources import SluicewayResource
from orchestration.stack_health import stack_health

__all__ = ["defs"]

defs = Definitions(
    jobs=[stack_health],
    resources={"sluiceway": SluicewayResource()},
)
