"""Processes of the local stack: spawn detached, remember by pid file, stop and wait.

Each server runs in its own session (process group) with stdout and stderr appended to
``<state>/logs/<name>.log``; its pid file ``<state>/pids/<name>.pid`` holds the pid and the
kernel's start time of that pid, so a recycled pid is never mistaken for our server (and never
signalled). `stop` signals the whole group and waits until the process is gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ProcessSpec", "RunningProcess", "read_pidfile", "spawn", "stop", "tail"]

# Servers started by this very process are its children: their Popen objects are kept so they
# can be reaped (no zombies) and are not garbage-collected while the server runs.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class ProcessSpec:
    """How to run one server process."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    user: str | None = None
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 60.0


@dataclass(frozen=True)
class RunningProcess:
    """A process the stack started, as recorded in its pid file."""

    name: str
    pid: int
    pidfile: Path

    def alive(self) -> bool:
        """True while the process runs (a zombie counts as gone)."""
        return _state(self.pid) not in (None, "Z", "X")


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; fields after its ')' are fixed.
    return stat.rsplit(")", 1)[1].split()[19]


def _state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def read_pidfile(pidfile: Path) -> RunningProcess | None:
    """The process recorded in ``pidfile`` if it still runs, else None (stale files are removed)."""
    try:
        pid_text, started = pidfile.read_text().split()
    except (OSError, ValueError):
        return None
    pid = int(pid_text)
    if _start_time(pid) != started or _state(pid) in (None, "Z", "X"):
        pidfile.unlink(missing_ok=True)
        return None
    return RunningProcess(pidfile.stem, pid, pidfile)


def spawn(spec: ProcessSpec, pid_dir: Path, log_dir: Path) -> RunningProcess:
    """Start ``spec`` detached from this process, logging to ``log_dir/<name>.log``."""
    pid_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{spec.name}.log"
    env = {**os.environ, **spec.env}
    with log_path.open("ab") as log:
        log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {spec.name}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            spec.argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=spec.cwd,
            env=env,
            user=spec.user,
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    pidfile = pid_dir / f"{spec.name}.pid"
    started = _start_time(proc.pid) or "0"
    pidfile.write_text(f"{proc.pid} {started}\n")
    return RunningProcess(spec.name, proc.pid, pidfile)


def _reap(pid: int) -> None:
    # Servers started by an earlier CLI call were adopted by init, which reaps them.
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        del _CHILDREN[pid]


def stop(proc: RunningProcess, sig: int = signal.SIGTERM, timeout: float = 60.0) -> bool:
    """Signal the process group of ``proc`` and wait for it to exit.

    After ``timeout`` seconds the group is killed with SIGKILL. Returns True if the process
    exited on the first signal, False if it had to be killed.
    """
    graceful = True
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    deadline = time.monotonic() + timeout
    while True:
        _reap(proc.pid)
        if not proc.alive():
            break
        if time.monotonic() > deadline:
            graceful = False
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
        time.sleep(0.1)
    # Children left in the group (e.g. a server's helpers) go with it.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.pidfile.unlink(missing_ok=True)
    return graceful


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file (empty if it does not exist)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
