"""The command line: every command is listed, and errors are one clear line, no traceback."""

from __future__ import annotations

import subprocess
import sys


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sluiceway.cli", *args], capture_output=True, text=True, check=False
    )


def test_commands_are_listed() -> None:
    result = _cli("--help")
    assert result.returncode == 0
    for command in (
        "stack",
        "pipelines",
        "capture",
        "process",
        "load",
        "stream",
        "backfill",
        "demo",
        "ui",
    ):
        assert command in result.stdout


def test_a_missing_pipeline_is_a_clear_error() -> None:
    result = _cli("capture", "status", "no_such_pipeline")
    assert result.returncode == 1
    assert "error: no pipeline 'no_such_pipeline'" in result.stderr
    assert "known: shop" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
