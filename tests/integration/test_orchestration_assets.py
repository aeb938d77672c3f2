"""The control plane's assets and jobs materialize in-process against the real services: a
partitioned batch load rebuilds the target, the parity check passes — and fails naming the key
when the target diverges — and the snapshot job re-snapshots a live pipeline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from dagster import AssetKey, AssetSelection, Definitions, define_asset_job
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from loaders.duckdb.sink import open_duckdb
from loaders.runner import Loader
from orchestration.batch import batch_load, partitions_of
from orchestration.checks import pipeline_checks
from orchestration.resources import SluicewayResource
from orchestration.snapshots import snapshot_job
from sluiceway.pipeline import BigQueryTarget, DuckDBTarget, Pipeline, SnowflakeTarget
from sluiceway.settings import Settings
from stack.manager import Stack
from tests.integration.capture_support import (
    capture_running,
    make_pipeline,
    read_topic,
    temporary_database,
    wait_caught_up,
)
from tests.integration.conftest import require
from tests.integration.test_loaders import COLUMNS, _pg_rows, _setup, _sink, _workload

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TABLES = [("public", "orders")]


def _pipeline(unique: str, warehouse: Path) -> Pipeline:
    base = make_pipeline(unique, topics={"partitions": 2})
    start = (datetime.now(UTC) - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    target = DuckDBTarget(path=warehouse, mode="both", partitions="hourly", partitions_start=start)
    return base.model_copy(update={"targets": [target]})


def _definitions(pipeline: Pipeline) -> Definitions:
    return Definitions(
        assets=[batch_load(pipeline, pipeline.targets[0], TABLES)],
        asset_checks=pipeline_checks(pipeline, TABLES),
        resources={"sluiceway": SluicewayResource()},
    )


def _target_rows(warehouse: Path, schema: str) -> list[tuple[object, ...]]:
    conn = open_duckdb(warehouse)
    rows = conn.execute(f'SELECT {COLUMNS} FROM "{schema}".orders ORDER BY id').fetchall()
    conn.close()
    return [(*r[:6], orjson.loads(r[6]) if r[6] else None) for r in rows]


def test_partitioned_backfill_then_parity(
    settings: Settings, stack: Stack, unique: str, tmp_path: Path
) -> None:
    require(stack, "postgres")
    warehouse = tmp_path / "w.duckdb"
    pipeline = _pipeline(unique, warehouse)
    with temporary_database(settings, unique) as conn:
        _setup(conn)
        with capture_running(settings, pipeline) as capture:
            _workload(conn, 300, 3)
            wait_caught_up(capture, conn)
        defs = _definitions(pipeline)
        job = defs.resolve_implicit_global_asset_job_def()
        keys = partitions_of(pipeline.targets[0]).get_partition_keys()
        # A single-run backfill of the last two hourly partitions (now, and the hour before:
        # the test may straddle an hour).
        result = job.execute_in_process(
            tags={
                ASSET_PARTITION_RANGE_START_TAG: keys[-2],
                ASSET_PARTITION_RANGE_END_TAG: keys[-1],
            },
            asset_selection=[
                AssetKey([unique, "duckdb", "orders"]),
                AssetKey([unique, "duckdb", "orders__history"]),
            ],
        )
        assert result.success
        materialized = result.asset_materializations_for_node(f"{unique}_duckdb_batch_load")
        assert {m.asset_key.path[-1] for m in materialized} == {"orders", "orders__history"}
        assert _target_rows(warehouse, unique) == _pg_rows(conn)

        evaluations = _run_checks(defs, unique)
        assert evaluations["parity"].passed, evaluations["parity"].metadata
        assert evaluations["freshness"].passed
        assert evaluations["empty"].passed  # nothing dead-lettered

        # The target diverges: parity fails and names the key.
        target = open_duckdb(warehouse)
        target.execute(f"UPDATE \"{unique}\".orders SET customer = 'tampered' WHERE id = 7")
        target.execute(f'DELETE FROM "{unique}".orders WHERE id = 9')
        target.close()
        parity = _run_checks(defs, unique)["parity"]
        assert not parity.passed
        metadata = {k: v.value for k, v in parity.metadata.items()}
        assert metadata["different values"] == 1 and metadata["missing in target"] == 1
        assert metadata["differing keys (first)"] == "7, 9"

        # Replaying the partitions rebuilds what the position guard lets through: the tampered
        # row keeps its (newer-looking) position, so a backfill is no repair for it — the
        # deleted row comes back.
        job.execute_in_process(
            tags={ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]}
        )
        assert 9 in [r[0] for r in _target_rows(warehouse, unique)]


def _run_checks(defs: Definitions, unique: str) -> dict[str, object]:
    checks = Definitions.merge(
        defs,
        Definitions(
            jobs=[
                define_asset_job(
                    "checks",
                    selection=AssetSelection.checks_for_assets(
                        AssetKey([unique, "duckdb", "orders"]),
                        AssetKey([unique, "kafka", f"{unique}.dlq"]),
                    ),
                )
            ]
        ),
    )
    result = checks.resolve_job_def("checks").execute_in_process()
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_snapshot_job_resnapshots_a_live_pipeline(
    settings: Settings, stack: Stack, unique: str, tmp_path: Path
) -> None:
    require(stack, "postgres")
    pipeline = _pipeline(unique, tmp_path / "w.duckdb")
    topic = f"{unique}.public.orders"
    with temporary_database(settings, unique) as conn:
        _setup(conn)
        with capture_running(settings, pipeline) as capture:
            wait_caught_up(capture, conn)
            before = [orjson.loads(v)["op"] for _, v in read_topic(settings, topic) if v]
            job = snapshot_job(pipeline, TABLES)
            result = job.execute_in_process(
                run_config={
                    "ops": {f"{unique}_snapshot_tables": {"config": {"tables": ["public.orders"]}}}
                },
                resources={"sluiceway": SluicewayResource()},
            )
            # The job ends once capture confirmed the snapshot's last chunk in Kafka.
            assert result.success
            wait_caught_up(capture, conn)
        after = [orjson.loads(v)["op"] for _, v in read_topic(settings, topic) if v]
        rows = len(_pg_rows(conn))
        # Every row once more, as a snapshot read ('r'), on top of the initial snapshot.
        assert after.count("r") == before.count("r") + rows


@pytest.mark.parametrize("kind", ["bigquery", "snowflake"])
def test_parity_on_warehouse_targets(
    settings: Settings, stack: Stack, unique: str, tmp_path: Path, kind: str
) -> None:
    require(stack, "postgres")
    require(stack, {"snowflake": "fakesnow"}.get(kind, kind))
    target = (
        BigQueryTarget(mode="current") if kind == "bigquery" else SnowflakeTarget(mode="current")
    )
    pipeline = make_pipeline(unique, topics={"partitions": 2}).model_copy(
        update={"targets": [target]}
    )
    with (
        temporary_database(settings, unique) as conn,
        _sink(kind, settings, unique, tmp_path / "x") as sink,
    ):
        _setup(conn)
        with capture_running(settings, pipeline) as capture:
            _workload(conn, 200, 5)
            wait_caught_up(capture, conn)
        Loader(settings, pipeline, sink, mode="current").load_window(0, 4_102_444_800_000)
        checks = pipeline_checks(pipeline, TABLES)
        defs = Definitions(
            asset_checks=checks,
            resources={"sluiceway": SluicewayResource()},
            jobs=[
                define_asset_job(
                    "checks",
                    selection=AssetSelection.checks_for_assets(AssetKey([unique, kind, "orders"])),
                )
            ],
        )
        result = defs.resolve_job_def("checks").execute_in_process()
        evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
        parity = evaluations["parity"]
        metadata = {k: v.value for k, v in parity.metadata.items()}
        assert parity.passed, metadata
        assert metadata["source rows"] == metadata["target rows"] > 0
