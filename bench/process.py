"""What the benchmarks share: a fresh database, the capture as its own process (as in
production), topics counted and dropped, peak memory."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from sluiceway.settings import Settings

__all__ = [
    "TopicCounter",
    "drop_databases",
    "drop_topics",
    "fresh_database",
    "peak_rss_mb",
    "start_capture",
    "write_spec",
]


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


# A topic just created answers these until its partitions have leaders.
_ELECTING = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
}


class TopicCounter:
    """Counts the records in topics by their high watermarks (fresh, non-transactional topics:
    one offset per record)."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = Consumer(
            {**settings.kafka.client_config(), "group.id": "sluiceway.bench.counter"}
        )
        self._partitions: dict[str, list[int]] = {}  # asked once per topic, not per poll

    def records(self, topic: str) -> int:
        """The records in ``topic`` now; 0 while it is being created (no leader yet)."""
        try:
            partitions = self._partitions.get(topic)
            if partitions is None:
                metadata = self.consumer.list_topics(topic, timeout=10).topics.get(topic)
                if metadata is None or metadata.error is not None or not metadata.partitions:
                    return 0
                partitions = self._partitions[topic] = list(metadata.partitions)
            return sum(
                self.consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in partitions
            )
        except KafkaException as exc:
            if exc.args[0].retriable() or exc.args[0].code() in _ELECTING:
                return 0
            raise

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


def fresh_database(settings: Settings, database: str, pipeline: str) -> Any:
    """Drop and create ``database``, delete the topics and the capture state of ``pipeline``:
    a benchmark run starts from nothing. An autocommit connection to the new database."""
    from sluiceway.connect import postgres_connection
    from streaming.sources.postgres.state import CaptureState

    drop_databases(settings, [database])
    admin = postgres_connection(settings.postgres, database="postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{database}"')
    admin.close()
    drop_topics(settings, f"{pipeline}.")
    CaptureState.path(settings.state_dir, pipeline).unlink(missing_ok=True)
    conn = postgres_connection(settings.postgres, database=database)
    conn.autocommit = True
    return conn


def drop_databases(settings: Settings, databases: list[str]) -> None:
    """Drop these PostgreSQL databases, their replication slots first (so no WAL stays
    retained for them)."""
    from sluiceway.connect import postgres_connection
    from streaming.sources.postgres.catalog import drop_slot

    admin = postgres_connection(settings.postgres, database="postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        for database in databases:
            cur.execute(
                "SELECT slot_name FROM pg_replication_slots WHERE database = %s", (database,)
            )
            for (slot,) in cur.fetchall():
                drop_slot(admin, slot, timeout=30)
            cur.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    admin.close()


def drop_topics(settings: Settings, prefix: str) -> int:
    """Delete the topics whose names start with ``prefix``; how many there were."""
    from sluiceway.connect import kafka_admin

    admin = kafka_admin(settings.kafka)
    doomed = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
    if doomed:
        for future in admin.delete_topics(doomed).values():
            future.result()
    return len(doomed)
