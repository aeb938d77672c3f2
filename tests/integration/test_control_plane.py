"""The control plane end to end: `dagster dev` (webserver and daemon) serving a pipeline.

The supervisor sensor starts the streams it is asked for and relaunches a killed worker; the
UI, in headless Chromium, shows the pipeline's assets in the lineage graph; a backfill of two
partitions launched through GraphQL rebuilds the target's rows.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import orjson
import pytest
import yaml

from loaders.duckdb.sink import open_duckdb
from orchestration.batch import partitions_of
from orchestration.cli import _dagster, _stop_dagster
from orchestration.streams import StreamStore
from sluiceway.pipeline import load_pipeline
from sluiceway.settings import Settings, load_settings
from stack.browser import chromium
from stack.manager import Stack
from tests.integration.capture_support import temporary_database
from tests.integration.test_loaders import COLUMNS, _pg_rows, _setup, _workload

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass
class Plane:
    settings: Settings
    name: str
    url: str
    conn: Any
    warehouse: Path
    store: StreamStore
    log: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _graphql(url: str, query: str, variables: dict[str, Any] | None = None) -> Any:
    body = orjson.dumps({"query": query, "variables": variables or {}})
    request = urllib.request.Request(  # noqa: S310 - the local webserver
        f"{url}/graphql", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        answer = orjson.loads(response.read())
    assert "errors" not in answer, answer
    return answer["data"]


def _wait(predicate: Any, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if predicate():
                return
        time.sleep(0.5)
    tail = log.read_text()[-4000:] if log.exists() else ""
    raise AssertionError(f"{what} did not happen in {timeout:.0f} s\n{tail}")


def _running(plane: Plane, stream: str) -> bool:
    return plane.store.read(stream).running()


def _target_rows(plane: Plane) -> list[tuple[Any, ...]]:
    conn = open_duckdb(plane.warehouse)
    try:
        rows = conn.execute(f'SELECT {COLUMNS} FROM "{plane.name}".orders ORDER BY id').fetchall()
    except Exception:  # noqa: BLE001 - the table may not exist yet
        rows = []
    finally:
        conn.close()
    return [(*r[:6], orjson.loads(r[6]) if r[6] else None) for r in rows]


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    base = load_settings()
    stack = Stack(base)
    for service in ("postgres", "kafka"):
        ok, detail = stack.services[service].healthy()
        if not ok:
            pytest.fail(f"{service} is not healthy ({detail}); run `sluiceway stack up`")
    tmp = tmp_path_factory.mktemp("plane")
    name = f"cp{os.urandom(5).hex()}"
    pipelines = tmp / "pipelines"
    pipelines.mkdir()
    warehouse = tmp / "w.duckdb"
    start = (datetime.now(UTC) - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    (pipelines / f"{name}.yaml").write_text(
        yaml.safe_dump(
            {
                "name": name,
                "owner": "data-platform",
                "source": {"database": name, "tables": {"include": ["public.orders"]},
                           "heartbeat_seconds": 1, "status_seconds": 0.5},
                "topics": {"partitions": 1},
                "targets": [{"kind": "duckdb", "path": str(warehouse), "mode": "both",
                             "batch_seconds": 0.2, "partitions": "hourly",
                             "partitions_start": start.isoformat()}],
            }
        )
    )  # fmt: skip
    env = {
        "SLUICEWAY_PIPELINES_DIR": str(pipelines),
        "SLUICEWAY_STATE_DIR": str(tmp / "state"),
        "SLUICEWAY_DAGSTER__PORT": str(_free_port()),
    }
    with mock.patch.dict(os.environ, env), temporary_database(base, name) as conn:
        _setup(conn)
        settings = load_settings()
        log = tmp / "dagster.log"
        process = _dagster(settings, log)
        url = f"http://{settings.dagster.host}:{settings.dagster.port}"
        plane = Plane(settings, name, url, conn, warehouse, StreamStore(settings), log)
        try:
            _wait(lambda: _graphql(url, "{ version }"), 120, "the Dagster webserver", log)
            yield plane
        finally:
            for stream in (f"{name}_capture", f"{name}_load_duckdb"):
                plane.store.want(stream, "stopped")
            with contextlib.suppress(AssertionError):
                _wait(
                    lambda: not any(_running(plane, s) for s in (f"{name}_capture",
                                                                 f"{name}_load_duckdb")),
                    60, "streams stopping", log,
                )  # fmt: skip
            _stop_dagster(process)


def test_supervisor_starts_streams_and_relaunches_a_killed_worker(plane: Plane) -> None:
    capture, load = f"{plane.name}_capture", f"{plane.name}_load_duckdb"
    plane.store.want(capture, "running")
    plane.store.want(load, "running")
    _wait(lambda: _running(plane, capture) and _running(plane, load), 120, "streams", plane.log)
    _workload(plane.conn, 200, 31)
    _wait(lambda: _target_rows(plane) == _pg_rows(plane.conn), 90, "rows loaded", plane.log)

    killed = plane.store.read(capture)
    assert killed.pid is not None and killed.run_id is not None
    os.kill(killed.pid, signal.SIGKILL)
    _wait(
        lambda: plane.store.read(capture).run_id != killed.run_id and _running(plane, capture),
        150, "the supervisor relaunching capture", plane.log,
    )  # fmt: skip
    state = plane.store.read(capture)
    # Why is recorded: the heartbeat stopped, or Dagster saw the run's process die first.
    reason = state.last_failure or ""
    assert state.restarts >= 1 and ("heartbeat" in reason or "worker died" in reason), reason
    old = _graphql(
        plane.url,
        "query($id: ID!) { runOrError(runId: $id) { ... on Run { status tags { key value } } } }",
        {"id": killed.run_id},
    )["runOrError"]
    assert old["status"] == "FAILURE"
    relaunched = _graphql(
        plane.url,
        "query($id: ID!) { runOrError(runId: $id) { ... on Run { tags { key value } } } }",
        {"id": state.run_id},
    )["runOrError"]
    tags = {t["key"]: t["value"] for t in relaunched["tags"]}
    assert tags["sluiceway/restart-reason"] == reason[:200]
    # After the kill and the relaunch, the target is exact again.
    _workload(plane.conn, 200, 32)
    _wait(lambda: _target_rows(plane) == _pg_rows(plane.conn), 90, "rows loaded again", plane.log)


def test_ui_shows_the_lineage_and_a_backfill_rebuilds_the_target(
    plane: Plane, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    _graphql(plane.url, "mutation { setNuxSeen }")  # no community pop-up over the graph
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(f"{plane.url}/asset-groups", wait_until="networkidle")
        for label in (f"{plane.name}.public.orders", "orders__history"):
            page.get_by_text(label, exact=False).first.wait_for(timeout=60_000)
        page.screenshot(path=str(tmp_path / "lineage.png"))
        if os.environ.get("SLUICEWAY_LINEAGE_SCREENSHOT"):
            page.screenshot(path=os.environ["SLUICEWAY_LINEAGE_SCREENSHOT"])
        browser.close()

    # Without the continuous load, empty the target; a backfill of the last two hourly
    # partitions must rebuild it from Kafka.
    load = f"{plane.name}_load_duckdb"
    plane.store.want(load, "stopped")
    _wait(lambda: not _running(plane, load), 60, "the load stream stopping", plane.log)
    if not _target_rows(plane):
        _workload(plane.conn, 50, 33)  # the first test did not run: make some changes
        time.sleep(5)
    target = open_duckdb(plane.warehouse)
    target.execute(f'DELETE FROM "{plane.name}".orders')
    target.execute(f'DELETE FROM "{plane.name}".orders__history')
    target.close()
    assert _target_rows(plane) == []

    spec = load_pipeline(plane.name, plane.settings.pipelines_dir)
    keys = partitions_of(spec.targets[0]).get_partition_keys()[-2:]
    launched = _graphql(
        plane.url,
        "mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) { "
        "__typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }",
        {"p": {"partitionNames": keys, "assetSelection": [
            {"path": [plane.name, "duckdb", "orders"]},
            {"path": [plane.name, "duckdb", "orders__history"]}]}},
    )["launchPartitionBackfill"]  # fmt: skip
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill = launched["backfillId"]

    def done() -> bool:
        status = _graphql(
            plane.url,
            "query($id: String!) { partitionBackfillOrError(backfillId: $id) { "
            "... on PartitionBackfill { status } } }",
            {"id": backfill},
        )["partitionBackfillOrError"]["status"]
        assert status not in ("FAILED", "COMPLETED_FAILED", "CANCELED"), status
        return str(status).startswith("COMPLETED")

    _wait(done, 180, "the backfill", plane.log)
    assert _target_rows(plane) == _pg_rows(plane.conn)
