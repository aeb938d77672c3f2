"""The Dagster instance of a Sluiceway installation: DAGSTER_HOME inside the state directory."""

from __future__ import annotations

from pathlib import Path

from sluiceway.settings import Settings

__all__ = ["dagster_home"]

_DAGSTER_YAML = """\
telemetry:
  enabled: false
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 8
"""


def dagster_home(settings: Settings) -> Path:
    """Create (idempotently) and return DAGSTER_HOME with its dagster.yaml."""
    home = settings.state_dir / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.is_file() or config.read_text() != _DAGSTER_YAML:
        config.write_text(_DAGSTER_YAML)
    return home
