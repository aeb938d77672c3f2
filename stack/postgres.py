"""PostgreSQL 15 from Debian's postgresql-15: its own cluster in the state directory.

Configured for logical replication (wal_level=logical, replication slots and WAL senders from
settings), listening on 127.0.0.1 only. initdb and postgres refuse to run as root, so when the
stack runs as root the server runs as the ``postgres`` OS user, which owns the data directory.
Bootstrap creates the ``sluiceway`` role (LOGIN, REPLICATION, SUPERUSER on this local cluster
only: capture against a real server needs just REPLICATION and table ownership or SELECT) and
its database.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
from pathlib import Path

import psycopg2
from psycopg2 import sql

from sluiceway.errors import MissingDependency
from stack.process import ProcessSpec
from stack.service import Service, runtime_dir

__all__ = ["PostgresService", "postgres_bindir"]

_CANDIDATES = [Path("/usr/lib/postgresql/15/bin")]


def postgres_bindir() -> Path | None:
    """The directory of the PostgreSQL 15 server binaries, if installed."""
    for candidate in _CANDIDATES:
        if (candidate / "postgres").is_file():
            return candidate
    found = shutil.which("postgres")
    return Path(found).parent if found else None


def _reachable(path: Path, user: str, test: str = "-x") -> bool:
    """Can ``user`` traverse (-x) or write (-w) ``path``, every parent included?"""
    return subprocess.run(["test", test, str(path)], user=user, check=False).returncode == 0


class PostgresService(Service):
    """The PostgreSQL source/target database."""

    name = "postgres"

    def _os_user(self) -> str | None:
        return "postgres" if os.geteuid() == 0 else None

    def missing(self) -> list[str]:
        if postgres_bindir() is None:
            return ["PostgreSQL 15 server binaries not found: apt-get install postgresql-15"]
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                return ["OS user postgres missing: apt-get install postgresql-15"]
        return []

    def apt_packages(self) -> list[str]:
        return ["postgresql-15", "postgresql-client-15"] if self.missing() else []

    def ports(self) -> list[tuple[str, int]]:
        return [("postgres.port", self.settings.postgres.port)]

    def address(self) -> str:
        return f"postgresql://127.0.0.1:{self.settings.postgres.port}"

    @property
    def home(self) -> Path:
        """Where the cluster lives: in the state directory if the server's OS user can reach
        it, else (a state directory under a private home, say) a directory of its own."""
        user = self._os_user()
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        if user is None or _reachable(self.settings.state_dir, user):
            return self.dir
        digest = hashlib.sha1(str(self.settings.state_dir).encode(), usedforsecurity=False)
        fallback = Path("/var/tmp") / f"sluiceway-{digest.hexdigest()[:10]}"  # noqa: S108
        return fallback / "postgres"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    def prepare(self) -> None:
        bindir = postgres_bindir()
        assert bindir is not None  # require_installed ran
        user = self._os_user()
        home = self.home
        home.mkdir(parents=True, exist_ok=True)
        if user:
            entry = pwd.getpwnam(user)
            if home.stat().st_uid != entry.pw_uid:
                os.chown(home, entry.pw_uid, entry.pw_gid)
            if not _reachable(home, user, "-w"):
                raise MissingDependency(
                    f"postgres: the OS user {user} cannot write {home}; make its parents "
                    "traversable (chmod o+x) or set SLUICEWAY_STATE_DIR elsewhere"
                )
            if home != self.dir:
                (self.dir / "data-location").write_text(f"{home}\n")
        if (self.data_dir / "PG_VERSION").exists():
            return
        subprocess.run(
            [
                str(bindir / "initdb"),
                "-D",
                str(self.data_dir),
                "--username=postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ],
            check=True,
            capture_output=True,
            user=user,
        )

    def processes(self) -> list[ProcessSpec]:
        pg = self.settings.postgres
        bindir = postgres_bindir() or Path("/usr/lib/postgresql/15/bin")
        conf = {
            "listen_addresses": "127.0.0.1",
            "port": str(pg.port),
            "unix_socket_directories": str(runtime_dir(self.settings)),
            "wal_level": "logical",
            "max_replication_slots": str(pg.max_replication_slots),
            "max_wal_senders": str(pg.max_replication_slots),
            "max_connections": "200",
            "shared_buffers": "256MB",
            "logical_decoding_work_mem": "64MB",
            "wal_sender_timeout": "60s",
            "password_encryption": "scram-sha-256",
        }
        argv = [str(bindir / "postgres"), "-D", str(self.data_dir)]
        for key, value in conf.items():
            argv += ["-c", f"{key}={value}"]
        return [ProcessSpec("postgres", argv, user=self._os_user(), stop_timeout=60)]

    def _superuser(self) -> psycopg2.extensions.connection:
        # Local superuser over the Unix socket (trust), used only to bootstrap.
        return psycopg2.connect(
            host=str(runtime_dir(self.settings)),
            port=self.settings.postgres.port,
            user="postgres",
            dbname="postgres",
            connect_timeout=3,
        )

    def check(self) -> str:
        conn = self._superuser()
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW wal_level")
                row = cur.fetchone()
                assert row is not None
                return f"wal_level={row[0]}"
        finally:
            conn.close()

    def bootstrap(self) -> None:
        pg = self.settings.postgres
        conn = self._superuser()
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (pg.user,))
                verb = "ALTER" if cur.fetchone() else "CREATE"
                cur.execute(
                    sql.SQL("{} ROLE {} LOGIN REPLICATION SUPERUSER PASSWORD %s").format(
                        sql.SQL(verb), sql.Identifier(pg.user)
                    ),
                    (pg.password.get_secret_value(),),
                )
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (pg.database,))
                if cur.fetchone() is None:
                    cur.execute(
                        sql.SQL("CREATE DATABASE {} OWNER {}").format(
                            sql.Identifier(pg.database), sql.Identifier(pg.user)
                        )
                    )
        finally:
            conn.close()
