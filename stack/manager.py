"""The local stack as a whole: install, start, stop and report every service.

Services start in parallel (each waits for its own health) and stop in parallel. `install`
gathers the Debian packages every selected service lacks into one apt-get call, with a
policy-rc.d in place so Debian does not start system-wide copies of the servers, then fetches
what apt does not provide (Kafka jars with mvn, the BigQuery emulator's virtualenv).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sluiceway.errors import MissingDependency, StackError
from sluiceway.settings import Settings
from stack.bigquery import BigQueryService
from stack.fakesnow import FakesnowService
from stack.kafka import KafkaService
from stack.mariadb import MariaDBService
from stack.postgres import PostgresService
from stack.seaweedfs import SeaweedFSService
from stack.service import Service, ServiceStatus, run_tool

__all__ = ["SERVICES", "Stack"]

SERVICES: dict[str, type[Service]] = {
    "postgres": PostgresService,
    "mariadb": MariaDBService,
    "kafka": KafkaService,
    "seaweedfs": SeaweedFSService,
    "fakesnow": FakesnowService,
    "bigquery": BigQueryService,
}

_MANAGED_FLAG = {
    "postgres": "postgres",
    "mariadb": "mariadb",
    "kafka": "kafka",
    "seaweedfs": "s3",
    "fakesnow": "snowflake",
    "bigquery": "bigquery",
}

_POLICY_RC = Path("/usr/sbin/policy-rc.d")


class Stack:
    """The servers of one state directory."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.services = {name: cls(settings) for name, cls in SERVICES.items()}

    def select(self, names: Iterable[str] = ()) -> list[Service]:
        """The named services (all managed ones if none are named)."""
        names = list(names)
        unknown = [n for n in names if n not in self.services]
        if unknown:
            raise StackError(f"unknown service(s) {unknown}; choose from {list(self.services)}")
        if names:
            return [self.services[n] for n in names]
        return [
            s for n, s in self.services.items() if getattr(self.settings, _MANAGED_FLAG[n]).managed
        ]

    def install(self, names: Iterable[str] = (), log: Callable[[str], None] = print) -> None:
        """Install and fetch everything the selected services need; idempotent."""
        services = self.select(names)
        packages = sorted({p for s in services for p in s.apt_packages()})
        if packages:
            log(f"apt-get install {' '.join(packages)}")
            _apt_install(packages)
        for service in services:
            if service.missing():
                log(f"installing {service.name}")
            service.install()
            service.require_installed()

    def up(self, names: Iterable[str] = (), log: Callable[[str], None] = print) -> dict[str, float]:
        """Start the selected services; returns seconds each took. Raises the first failure."""
        services = self.select(names)
        for service in services:
            service.require_installed()
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(max_workers=len(services)) as pool:
            futures = {s.name: pool.submit(s.start) for s in services}
            taken: dict[str, float] = {}
            errors: list[BaseException] = []
            for name, future in futures.items():
                try:
                    taken[name] = future.result()
                    log(f"{name} is up ({taken[name]:.1f}s)")
                except BaseException as exc:  # noqa: BLE001 - reported below, first one raised
                    errors.append(exc)
        if errors:
            raise errors[0]
        return taken

    def down(self, names: Iterable[str] = (), log: Callable[[str], None] = print) -> list[str]:
        """Stop what the stack started (by pid file); returns the processes stopped."""
        services = self.select(names) if names else list(self.services.values())
        with ThreadPoolExecutor(max_workers=len(services)) as pool:
            results = list(pool.map(lambda s: s.stop(), services))
        stopped = [name for names_ in results for name in names_]
        for name in stopped:
            log(f"stopped {name}")
        return stopped

    def status(self, names: Iterable[str] = ()) -> list[ServiceStatus]:
        """A status row per selected service."""
        services = self.select(names)
        with ThreadPoolExecutor(max_workers=len(services)) as pool:
            return list(pool.map(lambda s: s.status(), services))


def _apt_install(packages: list[str]) -> None:
    if os.geteuid() != 0:
        raise MissingDependency(
            f"missing Debian packages; run as root: apt-get install -y {' '.join(packages)}"
        )
    if shutil.which("apt-get") is None:
        raise MissingDependency(f"no apt-get here; install {' '.join(packages)} by other means")
    placed = False
    if not _POLICY_RC.exists():
        # Keep Debian from starting system-wide servers on install: the stack runs its own.
        _POLICY_RC.write_text("#!/bin/sh\nexit 101\n")
        _POLICY_RC.chmod(0o755)
        placed = True
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        for argv in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        ):
            run_tool(argv, f"`{' '.join(argv)}` failed", env=env)
    finally:
        if placed:
            _POLICY_RC.unlink(missing_ok=True)
