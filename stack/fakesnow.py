"""Snowflake, locally: fakesnow in server mode, reached through the real snowflake-connector.

fakesnow serves the Snowflake HTTP protocol on 127.0.0.1 backed by DuckDB in memory, so its
data lives as long as the process (tests create what they use). Known limits (fakesnow 0.12):
``write_pandas`` fails through the server (loaders use PUT + COPY INTO); after ``USE DATABASE``
issue ``USE SCHEMA``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from sluiceway.connect import snowflake_connection
from stack.process import ProcessSpec
from stack.service import Service

__all__ = ["FakesnowService"]


def _fakesnow() -> str | None:
    beside = Path(sys.executable).parent / "fakesnow"
    return str(beside) if beside.is_file() else shutil.which("fakesnow")


class FakesnowService(Service):
    """The Snowflake emulator."""

    name = "fakesnow"

    def missing(self) -> list[str]:
        if _fakesnow() is None:
            return ["fakesnow not found: pip install 'fakesnow[server]==0.12.1'"]
        return []

    def ports(self) -> list[tuple[str, int]]:
        return [("snowflake.port", self.settings.snowflake.port)]

    def address(self) -> str:
        return f"http://127.0.0.1:{self.settings.snowflake.port}"

    def processes(self) -> list[ProcessSpec]:
        port = str(self.settings.snowflake.port)
        argv = [_fakesnow() or "fakesnow", "-s", "-p", port, "--host", "127.0.0.1"]
        return [ProcessSpec("fakesnow", argv, cwd=self.dir, stop_timeout=20)]

    def check(self) -> str:
        conn = snowflake_connection(self.settings.snowflake, login_timeout=5)
        try:
            row = conn.cursor().execute("SELECT CURRENT_VERSION()").fetchone()
        finally:
            conn.close()
        return f"version {row[0]}"
