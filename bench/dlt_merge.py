"""Benchmark: the DuckDB loader next to dlt's merge, on the same change events.

Why the loaders are not built on dlt, measured: dlt (dlthub) can merge by primary key with
hard deletes into DuckDB, which is the nearest thing it offers to a current-state table. It
cannot refuse an older change than the row it holds, keep a delete guard, or keep
TOAST-unchanged values, so this measures only what both do — upserting the newest row per key
— on 1,000,000 insert events read from the same Kafka topic (``bench.load`` produces it). The
dlt side consumes with confluent-kafka, decodes each envelope with orjson and yields the rows
to a ``merge`` resource (``primary_key="id"``, ``hard_delete`` on deletes); the Sluiceway side
is ``load_window`` in current-state mode. The ratio is Sluiceway / dlt (above 1: faster).

    python -m bench.dlt_merge [--rows 1000000] [--runs 3]
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dlt
import orjson
from confluent_kafka import Consumer, TopicPartition
from rich.console import Console

from bench.load import PREFIX, _load, _produce
from bench.record import Figure, command, summarize
from loaders.duckdb import DuckDBSink
from loaders.runner import FETCH
from sluiceway.settings import Settings

__all__ = ["main"]

console = Console()
TOPIC = f"{PREFIX}.public.items"


def _rows(settings: Settings) -> Iterator[list[dict[str, Any]]]:
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": uuid.uuid4().hex,
            "enable.auto.commit": False,
            **FETCH,  # the loader's: both sides read Kafka alike
        }
    )
    partitions = consumer.list_topics(TOPIC, timeout=10).topics[TOPIC].partitions
    ends = {
        p: consumer.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=10)[1]
        for p in partitions
    }
    consumer.assign([TopicPartition(TOPIC, p, 0) for p in partitions])
    remaining = {p for p, end in ends.items() if end > 0}
    try:
        while remaining:
            page = []
            for msg in consumer.consume(100_000, timeout=0.5):
                if msg.error() is not None:
                    continue
                envelope = orjson.loads(msg.value())
                if envelope["op"] == "d":
                    page.append({**envelope["before"], "_deleted": True})
                else:
                    page.append({**envelope["after"], "_deleted": False})
                if msg.offset() + 1 >= ends[msg.partition()]:
                    remaining.discard(msg.partition())
            if page:
                yield page
    finally:
        consumer.close()


def _dlt(settings: Settings, directory: Path, rows: int, number: int) -> float:
    resource = dlt.resource(
        _rows(settings),
        name="items",
        write_disposition="merge",
        primary_key="id",
        columns={"_deleted": {"hard_delete": True, "data_type": "bool"}},
    )
    pipeline = dlt.pipeline(
        pipeline_name=f"bench_dlt_{number}",
        destination=dlt.destinations.duckdb(str(directory / f"dlt{number}.duckdb")),
        dataset_name="bench",
        pipelines_dir=str(directory / "dlt"),
    )
    start = time.perf_counter()
    pipeline.run(resource)
    elapsed = time.perf_counter() - start
    return rows / elapsed


def run(settings: Settings, rows: int, runs: int) -> Figure:
    """Measure, print and return the figure."""
    console.print(f"producing {rows:,} change events")
    _produce(settings, rows)
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for number in range(runs):
            theirs.append(_dlt(settings, directory, rows, number))
            sink = DuckDBSink(directory / f"ours{number}.duckdb", PREFIX)
            ours.append(_load(settings, sink, "current"))
            sink.close()
            console.print(f"sluiceway {ours[-1]:,.0f} rows/s, dlt merge {theirs[-1]:,.0f} rows/s")
    figure = summarize(
        f"duckdb load rows/s, next to dlt ({rows:,} events)",
        "rows/s",
        ours,
        "dlt merge into DuckDB (primary key, hard deletes)",
        theirs,
    )
    console.print(
        f"{figure.name}: {figure.value:,.0f} vs {figure.baseline_value:,.0f} ({figure.ratio:.2f}x)"
    )
    return figure


def main() -> None:
    """Command-line entry: measure and record into docs/benchmarks.json."""
    command(__doc__, lambda settings, rows, runs: [run(settings, rows, runs)], "rows", 300_000)


if __name__ == "__main__":
    main()
