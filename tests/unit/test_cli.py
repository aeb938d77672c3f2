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


def test_a_worker_command_loads_only_its_own_group() -> None:
    """`sluiceway capture ...` runs without Dagster, Quix Streams or pyarrow in its memory."""
    probe = (
        "import sys\n"
        "sys.argv = ['sluiceway', 'capture', '--help']\n"
        "from sluiceway.cli import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('dagster', 'quixstreams', 'pyarrow', 'duckdb')"
        " if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert "Change data capture into Kafka." in result.stdout
    assert result.stdout.strip().endswith("[]")
