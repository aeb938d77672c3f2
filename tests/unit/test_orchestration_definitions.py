"""Pipeline specifications become Dagster definitions: the lineage graph source table → change
topic → target table, with kinds, groups and owners; streams, snapshots, checks, schedules.
Adding a table or a target to a specification adds its assets, with no other code."""

from __future__ import annotations

from pathlib import Path

import yaml
from dagster import AssetKey, Definitions

from orchestration.definitions import build
from sluiceway.settings import load_settings


def _spec(directory: Path, tables: list[str], targets: list[dict[str, object]]) -> Definitions:
    directory.mkdir(exist_ok=True)
    (directory / "store.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "store",
                "owner": "data-platform",
                "source": {"database": "store", "tables": {"include": tables}},
                "targets": targets,
            }
        )
    )
    settings = load_settings().model_copy(update={"pipelines_dir": directory})
    defs = build(settings)
    Definitions.validate_loadable(defs)
    return defs


def _graph(defs: Definitions) -> dict[AssetKey, tuple[set[AssetKey], set[str], str | None]]:
    specs = defs.resolve_all_asset_specs()
    return {s.key: ({d.asset_key for d in s.deps}, set(s.kinds), s.group_name) for s in specs}


def test_lineage_kinds_groups_and_owners(tmp_path: Path) -> None:
    defs = _spec(
        tmp_path / "p",
        ["public.orders", "sales.items"],
        [{"kind": "duckdb", "mode": "both"}, {"kind": "postgres", "mode": "current"}],
    )
    graph = _graph(defs)
    source = AssetKey(["store", "source", "public.orders"])
    topic = AssetKey(["store", "kafka", "store.public.orders"])
    assert graph[source] == (set(), {"postgres"}, "store")
    assert graph[topic] == ({source}, {"kafka"}, "store")
    assert graph[AssetKey(["store", "duckdb", "orders"])] == ({topic}, {"duckdb"}, "store")
    assert graph[AssetKey(["store", "duckdb", "orders__history"])][0] == {topic}
    assert graph[AssetKey(["store", "postgres", "orders"])][1] == {"postgres"}
    assert AssetKey(["store", "postgres", "orders__history"]) not in graph  # mode current
    # Tables outside public keep their schema in the target's table name.
    assert AssetKey(["store", "duckdb", "sales_items"]) in graph
    assert AssetKey(["store", "kafka", "store.dlq"]) in graph
    owners = {s.key: list(s.owners) for s in defs.resolve_all_asset_specs()}
    assert owners[source] == ["team:data-platform"]

    jobs = {j.name for j in defs.resolve_all_job_defs()}
    assert {"store_capture", "store_load_duckdb", "store_load_postgres", "store_snapshot"} <= jobs
    assert defs.resolve_sensor_def("stream_supervisor") is not None
    assert defs.resolve_schedule_def("parity_nightly").cron_schedule == "0 2 * * *"
    checks = {(k.asset_key, k.name) for c in defs.asset_checks or [] for k in c.check_keys}  # type: ignore[union-attr]
    assert (AssetKey(["store", "duckdb", "orders"]), "parity") in checks
    assert (AssetKey(["store", "duckdb", "orders"]), "freshness") in checks
    assert (topic, "consumer_lag_duckdb") in checks
    assert (AssetKey(["store", "kafka", "store.dlq"]), "empty") in checks
    # The batch loads are time-partitioned (daily by default).
    load = defs.resolve_assets_def(AssetKey(["store", "duckdb", "orders"]))
    assert load.partitions_def is not None and load.backfill_policy is not None


def test_adding_a_table_or_target_adds_assets(tmp_path: Path) -> None:
    before = _graph(_spec(tmp_path / "a", ["public.orders"], [{"kind": "duckdb"}]))
    after = _graph(
        _spec(
            tmp_path / "b",
            ["public.orders", "public.refunds"],
            [{"kind": "duckdb"}, {"kind": "s3"}],
        )
    )
    added = set(after) - set(before)
    assert AssetKey(["store", "source", "public.refunds"]) in added
    assert AssetKey(["store", "kafka", "store.public.refunds"]) in added
    assert AssetKey(["store", "duckdb", "refunds"]) in added
    assert AssetKey(["store", "s3", "orders__history"]) in added  # s3 keeps history
    assert set(before) <= set(after)


def test_processors_add_enrichment_topics_streams_and_tables(tmp_path: Path) -> None:
    directory = tmp_path / "p"
    directory.mkdir()
    (directory / "store.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "store",
                "source": {
                    "database": "store",
                    "tables": {"include": ["public.orders", "public.customers"]},
                },
                "processors": [
                    {
                        "name": "orders_enriched",
                        "source": "public.orders",
                        "join": [{"table": "public.customers", "key": "customer_id"}],
                    },
                    {
                        "name": "per_country",
                        "source": "orders_enriched",
                        "window": {"seconds": 60, "key": "customers_country", "count": "n"},
                    },
                ],
                "targets": [{"kind": "duckdb"}],
            }
        )
    )
    defs = build(load_settings().model_copy(update={"pipelines_dir": directory}))
    Definitions.validate_loadable(defs)
    graph = _graph(defs)
    enriched = AssetKey(["store", "kafka", "store.enriched.orders_enriched"])
    assert graph[enriched][0] == {
        AssetKey(["store", "kafka", "store.public.orders"]),
        AssetKey(["store", "kafka", "store.public.customers"]),
    }
    window = AssetKey(["store", "kafka", "store.enriched.per_country"])
    assert graph[window][0] == {enriched}
    assert graph[AssetKey(["store", "duckdb", "enriched_per_country"])][0] == {window}
    assert "store_process" in {j.name for j in defs.resolve_all_job_defs()}
