"""MariaDB from Debian's mariadb-server: its own datadir, row-based binlog, loopback only.

The server runs with ``--no-defaults`` so no system configuration leaks in, with
binlog_format=ROW and binlog_row_image=FULL (what binlog capture needs), a server id from
settings, utf8mb4 throughout, and ``--user=root`` when the stack runs as root. Bootstrap
creates the ``sluiceway`` user (all privileges on this local server, replication included) and
its database, connecting as root over the Unix socket.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pymysql

from sluiceway.connect import mariadb_connection
from stack.process import ProcessSpec
from stack.service import Service, run_tool, runtime_dir

__all__ = ["MariaDBService"]


def _binary(*names: str) -> str | None:
    for name in names:
        for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
            if candidate and Path(candidate).is_file():
                return candidate
    return None


class MariaDBService(Service):
    """The MariaDB source database."""

    name = "mariadb"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def socket(self) -> Path:
        return runtime_dir(self.settings) / "mariadb.sock"

    def missing(self) -> list[str]:
        if _binary("mariadbd", "mysqld") is None or _binary("mariadb-install-db") is None:
            return ["mariadbd not found: apt-get install mariadb-server"]
        return []

    def apt_packages(self) -> list[str]:
        return ["mariadb-server", "mariadb-client"] if self.missing() else []

    def ports(self) -> list[tuple[str, int]]:
        return [("mariadb.port", self.settings.mariadb.port)]

    def address(self) -> str:
        return f"mysql://127.0.0.1:{self.settings.mariadb.port}"

    def _user(self) -> list[str]:
        return ["--user=root"] if os.geteuid() == 0 else []

    def prepare(self) -> None:
        (self.dir / "binlog").mkdir(parents=True, exist_ok=True)
        if (self.data_dir / "mysql").is_dir():
            return
        run_tool(
            [
                _binary("mariadb-install-db") or "mariadb-install-db",
                "--no-defaults",
                f"--datadir={self.data_dir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                *self._user(),
            ],
            "mariadb: mariadb-install-db failed",
        )

    def processes(self) -> list[ProcessSpec]:
        db = self.settings.mariadb
        argv = [
            _binary("mariadbd", "mysqld") or "mariadbd",
            "--no-defaults",
            f"--datadir={self.data_dir}",
            *self._user(),
            f"--port={db.port}",
            "--bind-address=127.0.0.1",
            f"--socket={self.socket}",
            f"--pid-file={self.dir / 'mariadbd.pid'}",
            f"--log-bin={self.dir / 'binlog' / 'mariadb-bin'}",
            "--binlog-format=ROW",
            "--binlog-row-image=FULL",
            # Column names, signedness, primary keys and ENUM/SET values in every table map:
            # binlog capture decodes rows without asking the catalog.
            "--binlog-row-metadata=FULL",
            f"--server-id={db.server_id}",
            "--binlog-expire-logs-seconds=604800",
            "--skip-name-resolve",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_unicode_ci",
            "--innodb-buffer-pool-size=256M",
            "--max-connections=300",
        ]
        return [ProcessSpec("mariadb", argv, cwd=self.dir, stop_timeout=60)]

    def check(self) -> str:
        conn = pymysql.connect(unix_socket=str(self.socket), user="root", connect_timeout=3)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT @@binlog_format, @@binlog_row_image, VERSION()")
                row = cur.fetchone()
                assert row is not None
                fmt, image, version = row
        finally:
            conn.close()
        return f"MariaDB {version}, binlog {fmt}/{image}"

    def bootstrap(self) -> None:
        db = self.settings.mariadb
        conn = pymysql.connect(unix_socket=str(self.socket), user="root", connect_timeout=3)
        try:
            with conn.cursor() as cur:
                password = db.password.get_secret_value()
                cur.execute(
                    "CREATE USER IF NOT EXISTS %s@'%%' IDENTIFIED BY %s", (db.user, password)
                )
                cur.execute("ALTER USER %s@'%%' IDENTIFIED BY %s", (db.user, password))
                cur.execute("GRANT ALL PRIVILEGES ON *.* TO %s@'%%' WITH GRANT OPTION", (db.user,))
                cur.execute(f"CREATE DATABASE IF NOT EXISTS `{db.database.replace('`', '``')}`")
            conn.commit()
        finally:
            conn.close()
        # The health users see is the settings' user over TCP.
        mariadb_connection(db).close()
