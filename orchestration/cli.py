"""``sluiceway ui``: serve the Dagster UI (webserver and daemon) for this installation."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

from orchestration.instance import dagster_home
from sluiceway.settings import REPO_ROOT, load_settings

__all__ = ["ui"]


def ui() -> None:
    """Serve the Dagster UI and daemon until Ctrl-C (DAGSTER_HOME in the state directory)."""
    settings = load_settings()
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home(settings))}
    dagster = Path(sys.executable).parent / "dagster"
    argv = [
        str(dagster),
        "dev",
        "-w",
        str(REPO_ROOT / "workspace.yaml"),
        "-h",
        settings.dagster.host,
        "-p",
        str(settings.dagster.port),
    ]
    print(f"Dagster UI on http://{settings.dagster.host}:{settings.dagster.port} (Ctrl-C stops)")
    with contextlib.suppress(KeyboardInterrupt):
        subprocess.run(argv, env=env, check=False, cwd=REPO_ROOT)
