"""What the capture benchmarks share: the capture as its own process, as in production."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer, TopicPartition

from sluiceway.settings import Settings

__all__ = ["TopicCounter", "drop_topics", "peak_rss_mb", "start_capture", "write_spec"]


def write_spec(directory: Path, spec: dict[str, Any]) -> Path:
    """The pipeline specification file ``sluiceway capture run`` reads."""
    path = directory / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def start_capture(spec: Path, marker: str, timeout: float = 60) -> subprocess.Popen[str]:
    """``sluiceway capture run spec`` in a process; returns once its log shows ``marker``
    (streaming has started: interpreter start-up and setup are not measured)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluiceway.cli", "capture", "run", str(spec)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    streaming = threading.Event()

    def watch() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:  # read to the end: a full pipe would block capture
            if marker in line:
                streaming.set()

    threading.Thread(target=watch, daemon=True).start()
    if not streaming.wait(timeout):
        proc.kill()
        raise RuntimeError(f"capture did not start streaming in {timeout:.0f} s")
    return proc


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class TopicCounter:
    """Counts the records in topics by their high watermarks (fresh, non-transactional topics:
    one offset per record)."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = Consumer(
            {**settings.kafka.client_config(), "group.id": "sluiceway.bench.counter"}
        )

    def records(self, topic: str) -> int:
        metadata = self.consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return 0
        return sum(
            self.consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in metadata.partitions
        )

    def wait(
        self, topic: str, count: int, alive: Callable[[], bool], timeout: float = 1800
    ) -> float:
        """Until ``topic`` holds ``count`` records; the monotonic time it did."""
        deadline = time.monotonic() + timeout
        while self.records(topic) < count:
            if not alive():
                raise RuntimeError(f"the writer of {topic} exited")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{topic} did not reach {count:,} records in {timeout:.0f} s")
            time.sleep(0.02)
        return time.monotonic()

    def close(self) -> None:
        self.consumer.close()


def drop_topics(settings: Settings, prefix: str) -> None:
    """Delete the topics named ``<prefix>.*`` (a benchmark's earlier run)."""
    from sluiceway.connect import kafka_admin

    admin = kafka_admin(settings.kafka)
    doomed = [t for t in admin.list_topics(timeout=10).topics if t.startswith(f"{prefix}.")]
    if doomed:
        for future in admin.delete_topics(doomed).values():
            future.result()
