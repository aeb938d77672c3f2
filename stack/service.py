"""The shape every server of the local stack shares: install, prepare, start, check, stop.

A `Service` knows its binaries (and the package that provides each), the ports it listens on
(and the setting that moves each), how to prepare its state directory, the processes to run,
how to tell it is healthy and what to create once it is up (roles, databases, buckets).
`Service.start` is idempotent: a healthy running service is left alone.
"""

from __future__ import annotations

import hashlib
import shutil
import signal
import socket
import stat
import subprocess
import time
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from sluiceway.errors import MissingDependency, PortInUse, ServiceUnhealthy
from sluiceway.settings import Settings
from stack.process import ProcessSpec, RunningProcess, read_pidfile, spawn, stop, tail

__all__ = [
    "Service",
    "ServiceStatus",
    "fetch_jars",
    "jars_fetched",
    "port_is_free",
    "run_tool",
    "runtime_dir",
]


@dataclass(frozen=True)
class ServiceStatus:
    """One row of `sluiceway stack status`."""

    name: str
    address: str
    pids: list[int]
    healthy: bool
    detail: str


def run_tool(argv: list[str], what: str, **kwargs: Any) -> None:
    """Run an install or preparation tool; on failure raise `MissingDependency` with the end
    of its output (``what`` names the step, e.g. 'kafka: mvn could not fetch the jars')."""
    result = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    if result.returncode != 0:
        raise MissingDependency(f"{what}:\n{(result.stdout + result.stderr)[-3000:]}")


def jars_fetched(pom: Path, libs: Path) -> bool:
    """Whether ``libs`` holds the runtime jars of ``pom`` as it is now (its hash is recorded)."""
    marker = libs / ".pom-digest"
    return marker.is_file() and marker.read_text() == _digest(pom)


def fetch_jars(pom: Path, libs: Path, what: str) -> None:
    """Copy the runtime closure of the Maven ``pom`` into ``libs`` with mvn, once per version
    of the pom (``what`` names the jars in errors, e.g. 'kafka')."""
    if jars_fetched(pom, libs):
        return
    if shutil.which("mvn") is None:
        raise MissingDependency(f"{what}: mvn not found: apt-get install maven")
    if libs.exists():
        shutil.rmtree(libs)
    libs.mkdir(parents=True)
    run_tool(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={libs}",
            "-DincludeScope=runtime",
        ],
        f"{what}: mvn could not fetch the jars",
    )
    (libs / ".pom-digest").write_text(_digest(pom))


def _digest(pom: Path) -> str:
    return hashlib.sha256(pom.read_bytes()).hexdigest()[:16]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if nothing listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) != 0


def _world_traversable(path: Path) -> bool:
    return all(p.stat().st_mode & stat.S_IXOTH for p in (path, *path.parents) if p.exists())


def runtime_dir(settings: Settings) -> Path:
    """A directory for Unix sockets: short enough for the 107-byte socket path limit, and
    reachable by servers that run as their own OS user (PostgreSQL as ``postgres``)."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    candidate = settings.state_dir / "run"
    if len(str(candidate)) > 70 or not _world_traversable(settings.state_dir):
        digest = hashlib.sha1(str(settings.state_dir).encode(), usedforsecurity=False)
        candidate = Path("/tmp") / f"sluiceway-{digest.hexdigest()[:10]}"  # noqa: S108
    candidate.mkdir(parents=True, exist_ok=True)
    candidate.chmod(0o1777)  # servers running as their own OS user create sockets here
    return candidate


class Service(ABC):
    """A server of the local stack."""

    name: ClassVar[str]
    start_timeout: ClassVar[float] = 90.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dir = settings.state_dir / self.name
        self.pid_dir = settings.state_dir / "pids"
        self.log_dir = settings.state_dir / "logs"

    # --- what it needs -------------------------------------------------------------------
    def missing(self) -> list[str]:
        """What is not installed, each as a sentence naming the package that provides it."""
        return []

    def apt_packages(self) -> list[str]:
        """Debian packages that provide the binaries missing now (none when all are there)."""
        return []

    def install(self) -> None:  # noqa: B027 - most services need nothing beyond apt and pip
        """Fetch what apt cannot (jars, virtualenvs); idempotent."""

    # --- how it runs ---------------------------------------------------------------------
    @abstractmethod
    def ports(self) -> list[tuple[str, int]]:
        """(setting, port) of every port the service listens on."""

    @abstractmethod
    def address(self) -> str:
        """Where clients reach it, for status output."""

    def prepare(self) -> None:  # noqa: B027 - a service may need no preparation
        """Create or update its state directory before the processes start; idempotent."""

    @abstractmethod
    def processes(self) -> list[ProcessSpec]:
        """The processes to run."""

    @abstractmethod
    def check(self) -> str:
        """Return a short health detail if healthy; raise any exception if not."""

    def bootstrap(self) -> None:  # noqa: B027 - a service may need nothing created
        """Create users, databases and buckets once the service answers; idempotent."""

    # --- the lifecycle, shared -----------------------------------------------------------
    def running(self) -> list[RunningProcess]:
        """The processes of this service that run now, from their pid files."""
        found = []
        for pidfile in sorted(self.pid_dir.glob(f"{self.name}*.pid")):
            proc = read_pidfile(pidfile)
            if proc is not None:
                found.append(proc)
        return found

    def log_files(self) -> list[Path]:
        """Log files of this service."""
        return sorted(self.log_dir.glob(f"{self.name}*.log"))

    def healthy(self) -> tuple[bool, str]:
        """(healthy, detail)."""
        primary = self.ports()[0][1]
        if port_is_free(primary):
            return False, f"nothing listens on 127.0.0.1:{primary}"
        try:
            return True, self.check()
        except Exception as exc:  # noqa: BLE001 - any failure means unhealthy; say which
            return False, f"{type(exc).__name__}: {exc}".splitlines()[0][:200]

    def require_installed(self) -> None:
        """Raise `MissingDependency` naming every missing piece and its package."""
        missing = self.missing()
        if missing:
            raise MissingDependency(
                f"{self.name}: " + "; ".join(missing) + " (or run `sluiceway stack install`)"
            )

    def start(self) -> float:
        """Start the service unless it already runs; wait until healthy. Returns seconds taken."""
        begun = time.monotonic()
        running = {p.name for p in self.running()}
        specs = self.processes()
        if running and all(spec.name in running for spec in specs):
            self._wait_healthy(begun)
            return time.monotonic() - begun
        self.require_installed()
        for setting, port in self.ports():
            if not port_is_free(port):
                raise PortInUse(
                    f"{self.name}: port {port} on 127.0.0.1 is taken by another process; "
                    f"stop it or move {self.name} with the setting {setting} "
                    f"(environment SLUICEWAY_{setting.upper().replace('.', '__')})"
                )
        self.dir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        for spec in specs:
            if spec.name not in running:
                spawn(spec, self.pid_dir, self.log_dir)
        self._wait_healthy(begun)
        self.bootstrap()
        return time.monotonic() - begun

    def _wait_healthy(self, begun: float) -> None:
        deadline = begun + self.start_timeout
        detail = ""
        while time.monotonic() < deadline:
            ok, detail = self.healthy()
            if ok:
                return
            if len(self.running()) < len(self.processes()):
                raise ServiceUnhealthy(self._unhealthy(f"a process of {self.name} exited"))
            time.sleep(0.5)
        raise ServiceUnhealthy(
            self._unhealthy(f"{self.name} not healthy after {self.start_timeout:.0f}s ({detail})")
        )

    def _unhealthy(self, what: str) -> str:
        logs = "\n".join(
            f"--- last lines of {path}:\n{tail(path, 30)}" for path in self.log_files()
        )
        return f"{what}\n{logs}"

    def stop(self) -> list[str]:
        """Stop every process this service started; returns their names.

        All processes are signalled at once: a KRaft broker stopped after its peers would lose
        its quorum and hang in controlled shutdown.
        """
        specs = {spec.name: spec for spec in self.processes()}
        running = self.running()
        with ThreadPoolExecutor(max_workers=max(1, len(running))) as pool:
            for proc in running:
                spec = specs.get(proc.name)
                sig = spec.stop_signal if spec else signal.SIGTERM
                timeout = spec.stop_timeout if spec else 60.0
                pool.submit(stop, proc, sig, timeout)
        return [proc.name for proc in running]

    def status(self) -> ServiceStatus:
        """Where it is, which pids run, and whether it answers."""
        pids = [p.pid for p in self.running()]
        if not pids:
            return ServiceStatus(self.name, self.address(), [], False, "not running")
        ok, detail = self.healthy()
        return ServiceStatus(self.name, self.address(), pids, ok, detail)
