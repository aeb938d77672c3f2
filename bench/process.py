"""What the capture benchmarks share: the capture as its own process, as in production."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import yaml

__all__ = ["peak_rss_mb", "start_capture", "write_spec"]


def write_spec(directory: Path, spec: dict[str, Any]) -> Path:
    """The pipeline specification file ``sluiceway capture run`` reads."""
    path = directory / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def start_capture(spec: Path, marker: str, timeout: float = 60) -> subprocess.Popen[str]:
    """``sluiceway capture run spec`` in a process; returns once its log shows ``marker``
    (streaming has started: interpreter start-up and setup are not measured)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluiceway.cli", "capture", "run", str(spec)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    streaming = threading.Event()

    def watch() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:  # read to the end: a full pipe would block capture
            if marker in line:
                streaming.set()

    threading.Thread(target=watch, daemon=True).start()
    if not streaming.wait(timeout):
        proc.kill()
        raise RuntimeError(f"capture did not start streaming in {timeout:.0f} s")
    return proc


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0
