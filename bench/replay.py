"""Benchmark: replaying a topic window into DuckDB next to a bare consume loop over it.

The replay is what a backfill does: `Loader.load_window` over the whole window of a
3-partition topic of 1,000,000 insert events (the same topic `bench.load` writes), into a fresh
DuckDB current-state table — offsets found by time, read, staged, applied with the position
guard, offsets stored with the rows. The baseline is a bare confluent-kafka consumer reading the
same window (assigned partitions, end offsets known, the loader's fetch settings, its
interpreter tuning and its `CONSUME_CHUNK` records per call, the fastest size) and doing
nothing with the records: how fast Python can read the window at all.

    python -m bench.replay [--events 1000000] [--runs 3]
"""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from rich.console import Console

from bench.load import PREFIX, _load, _produce
from bench.record import Figure, command, summarize
from loaders.duckdb import DuckDBSink
from loaders.runner import CONSUME_CHUNK, FETCH, interpreter_tuned
from sluiceway.settings import Settings

__all__ = ["main"]

console = Console()


def _bare(settings: Settings) -> float:
    """Records/s of a consumer reading the whole topic and doing nothing else."""
    topic = f"{PREFIX}.public.items"
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"bare-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            **FETCH,
        }
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    ends = {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
        for p in partitions
    }
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    left = {p for p, end in ends.items() if end > 0}
    read = 0
    with interpreter_tuned():
        started = time.perf_counter()
        while left:
            for message in consumer.consume(CONSUME_CHUNK, 1.0):
                if message.error() is None:
                    read += 1
                    if message.offset() + 1 >= ends[message.partition()]:
                        left.discard(message.partition())
        elapsed = time.perf_counter() - started
    consumer.close()
    return read / elapsed


def run(settings: Settings, events: int, runs: int) -> list[Figure]:
    """Measure, print and return the figures."""
    if _produce(settings, events, reuse=True):  # not if bench.load's topic holds them
        console.print(f"produced {events:,} insert events")
    else:
        console.print(f"reading the {events:,} insert events bench.load wrote")
    bare: list[float] = []
    replay: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for number in range(1, runs + 1):
            bare.append(_bare(settings))
            sink = DuckDBSink(Path(tmp) / f"replay{number}.duckdb", "bench")
            replay.append(_load(settings, sink, "current"))
            sink.close()
            console.print(
                f"run {number}/{runs}: bare consumer {bare[-1]:,.0f} records/s; "
                f"replay into DuckDB {replay[-1]:,.0f} rows/s"
            )
    return [
        summarize(
            "replay rows/s (1M-event topic window into DuckDB)",
            "rows/s",
            replay,
            "bare confluent-kafka consume loop over the same window",
            bare,
        )
    ]


def main() -> None:
    """Command-line entry: measure and record into docs/benchmarks.json."""
    command(__doc__, run, "events", 1_000_000)


if __name__ == "__main__":
    main()
