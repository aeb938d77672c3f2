"""The one Dagster `Definitions` object of Sluiceway; workspace.yaml points here.

Built from the pipeline specifications (``pipelines/``, or the settings' ``pipelines_dir``):
for each pipeline its lineage assets (`orchestration.assets`), one partitioned batch load per
target (`orchestration.batch`), the capture and continuous-load streams
(`orchestration.workers`) kept running by the supervisor sensor, a snapshot job, and the
asset checks with their nightly parity schedule (`orchestration.checks`); and for each
migration plan (``migrations/plans/``) its replication stream, cutover and rollback jobs
(`orchestration.migrations`).
"""

from __future__ import annotations

from dagster import AssetChecksDefinition, AssetsDefinition, AssetSpec, Definitions, JobDefinition

from migrations.plan import list_plans
from orchestration.assets import enriched, pipeline_specs, tables
from orchestration.batch import batch_load
from orchestration.checks import parity_schedule, pipeline_checks
from orchestration.migrations import migration_jobs
from orchestration.resources import SluicewayResource
from orchestration.snapshots import snapshot_job
from orchestration.stack_health import stack_health
from orchestration.supervisor import supervisor
from orchestration.workers import capture_stream, load_stream, process_stream
from sluiceway.pipeline import list_pipelines
from sluiceway.settings import Settings, load_settings

__all__ = ["build", "defs"]


def build(settings: Settings) -> Definitions:
    """The definitions of every pipeline in the settings' pipelines directory."""
    assets: list[AssetSpec | AssetsDefinition] = []
    checks: list[AssetChecksDefinition] = []
    streams: list[JobDefinition] = []
    jobs: list[JobDefinition] = [stack_health]
    for pipeline in list_pipelines(settings.pipelines_dir):
        captured = tables(pipeline, settings)
        loaded = captured + enriched(pipeline)  # enrichment topics load as tables too
        assets += pipeline_specs(pipeline, settings)
        streams.append(capture_stream(pipeline, captured))
        if pipeline.processors:
            streams.append(process_stream(pipeline))
        for target in pipeline.targets:
            assets.append(batch_load(pipeline, target, loaded))
            streams.append(load_stream(pipeline, target, loaded))
        checks += pipeline_checks(pipeline, captured, enriched(pipeline))
        if pipeline.source.kind == "postgres":  # incremental snapshots travel through the WAL
            jobs.append(snapshot_job(pipeline, captured))
    for plan in list_plans():
        replication, *phases = migration_jobs(plan)
        streams.append(replication)
        jobs += phases
    schedule = parity_schedule(checks)
    return Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=[*jobs, *streams],
        sensors=[supervisor(streams)] if streams else [],
        schedules=[schedule] if schedule is not None else [],
        resources={"sluiceway": SluicewayResource()},
    )


defs = build(load_settings())
