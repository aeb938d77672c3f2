"""Process supervision: pid files that survive pid reuse, and stop that waits for exit."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from stack.process import ProcessSpec, read_pidfile, spawn, stop, tail


def _sleeper(name: str) -> ProcessSpec:
    code = "import time, sys; print('ready', flush=True); time.sleep(60)"
    return ProcessSpec(name, [sys.executable, "-c", code])


def test_spawn_stop_and_log(tmp_path: Path) -> None:
    proc = spawn(_sleeper("sleeper"), tmp_path / "pids", tmp_path / "logs")
    found = read_pidfile(proc.pidfile)
    assert found is not None and found.pid == proc.pid and found.alive()
    assert stop(proc, signal.SIGTERM, timeout=10) is True
    assert not proc.alive()
    assert not proc.pidfile.exists()
    assert "starting sleeper" in tail(tmp_path / "logs" / "sleeper.log")


def test_stop_kills_what_ignores_the_signal(tmp_path: Path) -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ignoring', flush=True); time.sleep(60)"
    )
    spec = ProcessSpec("stubborn", [sys.executable, "-c", code])
    proc = spawn(spec, tmp_path / "pids", tmp_path / "logs")
    deadline = time.monotonic() + 10
    while "ignoring" not in tail(tmp_path / "logs" / "stubborn.log"):
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.05)
    assert stop(proc, signal.SIGTERM, timeout=1.0) is False
    assert not proc.alive()


def test_recycled_pid_is_not_ours(tmp_path: Path) -> None:
    proc = spawn(_sleeper("sleeper"), tmp_path / "pids", tmp_path / "logs")
    try:
        # Same pid, different start time: what a recycled pid looks like.
        proc.pidfile.write_text(f"{proc.pid} 1\n")
        assert read_pidfile(proc.pidfile) is None
        assert not proc.pidfile.exists()
    finally:
        proc.pidfile.write_text("")
        stop(proc, signal.SIGKILL, timeout=5)


def test_tail_of_missing_file_is_empty(tmp_path: Path) -> None:
    assert tail(tmp_path / "nope.log") == ""
