"""Dagster resources: how assets and ops reach Sluiceway's settings and the stack."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from sluiceway.settings import Settings, load_settings

__all__ = ["SluicewayResource"]


class SluicewayResource(ConfigurableResource):  # type: ignore[type-arg]
    """Sluiceway's settings, for every asset, op, sensor and check."""

    config_file: str | None = Field(
        default=None,
        description="YAML settings file; default $SLUICEWAY_CONFIG or ./sluiceway.yaml",
    )

    def settings(self) -> Settings:
        """The validated settings (environment variables apply as everywhere else)."""
        return load_settings(Path(self.config_file) if self.config_file else None)
