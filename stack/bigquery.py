"""BigQuery, locally: local-bigquery served from its own Python 3.13 virtualenv.

local-bigquery needs Python 3.13 (pyenv provides it), so it lives in ``<cache>/bigquery-venv``,
pinned: local-bigquery 0.3.2 (0.4.0 fails offline: it downloads the ducklake extension) with
DuckDB 1.5.5 and its ducklake, icu and spatial extensions from their PyPI packages. DuckDB
cannot download extensions here, so `install` INSTALLs each from its package file into the
HOME the server runs with. Clients use the real google-cloud-bigquery with anonymous
credentials and ``api_endpoint`` pointing here.
"""

from __future__ import annotations

import os
import shutil
import urllib.request
from pathlib import Path

from sluiceway.errors import MissingDependency
from stack.process import ProcessSpec
from stack.service import Service, run_tool

__all__ = ["BigQueryService", "python313"]

PINS = [
    "local-bigquery==0.3.2",
    "duckdb==1.5.5",
    "duckdb-extension-ducklake==1.5.5",
    "duckdb-extension-icu==1.5.5",
    "duckdb-extension-spatial==1.5.5",
]

_INSTALL_EXTENSIONS = """
import duckdb, glob, site
con = duckdb.connect()
for base in site.getsitepackages():
    for path in glob.glob(base + "/duckdb_extension_*/extensions/*/*.duckdb_extension"):
        con.execute(f"INSTALL '{path}'")
"""


def python313() -> str | None:
    """A Python 3.13 interpreter (pyenv's, or one on PATH)."""
    # pyenv's shim answers `which` even when 3.13 is not the selected version: look first in
    # pyenv's versions directory, where the real interpreter lives.
    root = os.environ.get("PYENV_ROOT", "~/.pyenv")
    versions = Path(root).expanduser() / "versions"
    matches = sorted(versions.glob("3.13*/bin/python3.13")) if versions.is_dir() else []
    if matches:
        return str(matches[-1])
    if Path("/usr/bin/python3.13").is_file():
        return "/usr/bin/python3.13"
    found = shutil.which("python3.13")
    return found if found and "shims" not in found else None


class BigQueryService(Service):
    """The BigQuery emulator."""

    name = "bigquery"

    @property
    def venv(self) -> Path:
        return self.settings.cache_dir / "bigquery-venv"

    @property
    def home(self) -> Path:
        # DuckDB's installed extensions live under HOME/.duckdb: part of the install.
        return self.settings.cache_dir / "bigquery-home"

    def _marker(self) -> Path:
        return self.venv / ".sluiceway-pins"

    def missing(self) -> list[str]:
        if python313() is None:
            return ["Python 3.13 not found: pyenv install 3.13 (or apt-get install python3.13)"]
        marker = self._marker()
        if not marker.is_file() or marker.read_text() != "\n".join(PINS):
            return [f"local-bigquery virtualenv missing in {self.venv}"]
        return []

    def install(self) -> None:
        marker = self._marker()
        if marker.is_file() and marker.read_text() == "\n".join(PINS):
            return
        python = python313()
        if python is None:
            raise MissingDependency("bigquery: Python 3.13 not found: pyenv install 3.13")
        if self.venv.exists():
            shutil.rmtree(self.venv)
        steps = [
            [python, "-m", "venv", str(self.venv)],
            [str(self.venv / "bin" / "pip"), "install", "-q", *PINS],
        ]
        for step in steps:
            run_tool(step, f"bigquery: {' '.join(step[:3])} failed")
        self.home.mkdir(parents=True, exist_ok=True)
        run_tool(
            [str(self.venv / "bin" / "python"), "-c", _INSTALL_EXTENSIONS],
            "bigquery: installing the DuckDB extensions failed",
            env={"HOME": str(self.home), "PATH": "/usr/bin:/bin"},
        )
        marker.write_text("\n".join(PINS))

    def ports(self) -> list[tuple[str, int]]:
        bq = self.settings.bigquery
        return [("bigquery.port", bq.port), ("bigquery.grpc_port", bq.grpc_port)]

    def address(self) -> str:
        return f"http://127.0.0.1:{self.settings.bigquery.port}"

    def processes(self) -> list[ProcessSpec]:
        bq = self.settings.bigquery
        argv = [
            str(self.venv / "bin" / "local-bigquery"),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(bq.port),
            "--grpc-port",
            str(bq.grpc_port),
            "--data-dir",
            str(self.dir / "data"),
        ]
        return [ProcessSpec("bigquery", argv, env={"HOME": str(self.home)}, cwd=self.dir)]

    def check(self) -> str:
        bq = self.settings.bigquery
        url = f"http://127.0.0.1:{bq.port}/bigquery/v2/projects/{bq.project}/datasets"
        with urllib.request.urlopen(url, timeout=3) as response:
            return f"HTTP {response.status}"
