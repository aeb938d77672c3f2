"""Debezium's PostgreSQL connector on Kafka Connect standalone: the anchor the capture and
snapshot benchmarks measure Sluiceway against, on the same broker and database.

The jars (Kafka Connect's runtime and JSON converter at the broker's Kafka version, Debezium
3.6.1.Final) are fetched with mvn from ``bench/debezium/pom.xml`` into ``<cache>/debezium-libs``
on first use. Each run is a fresh worker: its own offsets file, its own topic prefix and an
existing publication and slot, so it reads exactly the changes the other readers read.

The configuration is the one a user tuning Debezium for throughput would write (larger batches
and queue, producer batching); the benchmarks print it (`CONFIGURATION`) and
docs/benchmarks-notes.md writes it out beside Sluiceway's.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType

from sluiceway.settings import Settings
from stack.kafka import LOG4J2_PROPERTIES
from stack.service import fetch_jars

__all__ = ["CONFIGURATION", "DEBEZIUM", "Debezium"]

POM = Path(__file__).parent / "debezium" / "pom.xml"
STREAMING = "Processing messages"  # logged when the connector starts reading the slot
SNAPSHOTTING = "Snapshot step 1"  # logged when the initial snapshot begins


# What differs from the defaults, for both the worker and the connector.
WORKER = {
    "key.converter": "org.apache.kafka.connect.json.JsonConverter",
    "value.converter": "org.apache.kafka.connect.json.JsonConverter",
    "key.converter.schemas.enable": "false",
    "value.converter.schemas.enable": "false",
    "offset.flush.interval.ms": "1000",
    "producer.linger.ms": "5",
    "producer.batch.size": "262144",
    "producer.acks": "all",
}
CONNECTOR = {
    "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
    "tasks.max": "1",
    "plugin.name": "pgoutput",
    "publication.autocreate.mode": "disabled",
    "tombstones.on.delete": "false",
    "max.batch.size": "8192",
    "max.queue.size": "65536",
    "topic.creation.default.partitions": "3",
    "topic.creation.default.replication.factor": "1",
}
# How the figures name it (the configuration is written out in docs/benchmarks-notes.md).
DEBEZIUM = "Debezium 3.6.1 PostgreSQL connector on Kafka Connect standalone"
CONFIGURATION = (
    "Kafka Connect standalone (JVM -Xmx1g): "
    + ", ".join(f"{k}={v}" for k, v in WORKER.items())
    + "; Debezium PostgreSQL connector: "
    + ", ".join(f"{k}={v}" for k, v in CONNECTOR.items() if k != "connector.class")
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Debezium:
    """One Kafka Connect standalone worker running Debezium's PostgreSQL connector.

    Use as a context manager; `started` (the monotonic time of the marker line) is set once
    the connector logs that it streams (or snapshots).
    """

    def __init__(
        self,
        settings: Settings,
        directory: Path,
        *,
        database: str,
        publication: str,
        slot: str,
        table: str,
        prefix: str,
        snapshot: bool = False,
    ) -> None:
        self.settings = settings
        self.directory = directory
        self.libs = settings.cache_dir / "debezium-libs"
        self.marker = SNAPSHOTTING if snapshot else STREAMING
        pg = settings.postgres
        self.worker = {
            "bootstrap.servers": settings.kafka.bootstrap(),
            "offset.storage.file.filename": str(directory / f"{prefix}.offsets"),
            "listeners": f"http://127.0.0.1:{_free_port()}",
            **WORKER,
        }
        self.connector = {
            "name": f"bench-{prefix}",
            "database.hostname": pg.host,
            "database.port": str(pg.port),
            "database.user": pg.user,
            "database.password": pg.password.get_secret_value(),
            "database.dbname": database,
            "topic.prefix": prefix,
            "slot.name": slot,
            "publication.name": publication,
            "table.include.list": table,
            "snapshot.mode": "initial" if snapshot else "no_data",
            **CONNECTOR,
        }
        self.started: float | None = None
        self._seen = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        self._log: list[str] = []

    def __enter__(self) -> Debezium:
        fetch_jars(POM, self.libs, "debezium")
        self.directory.mkdir(parents=True, exist_ok=True)
        worker = self.directory / "worker.properties"
        connector = self.directory / "connector.properties"
        log4j = self.directory / "log4j2.properties"
        worker.write_text("".join(f"{k}={v}\n" for k, v in self.worker.items()))
        connector.write_text("".join(f"{k}={v}\n" for k, v in self.connector.items()))
        connector.chmod(0o600)  # it holds the database password
        log4j.write_text(LOG4J2_PROPERTIES)
        self._proc = subprocess.Popen(
            [
                "java",
                "-Xmx1g",
                f"-Dlog4j2.configurationFile={log4j}",
                "-cp",
                f"{self.libs}/*",
                "org.apache.kafka.connect.cli.ConnectStandalone",
                str(worker),
                str(connector),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._watch, daemon=True).start()
        if not self._seen.wait(120):
            self.__exit__(None, None, None)
            raise RuntimeError("Debezium did not start in 120 s:\n" + "".join(self._log[-30:]))
        return self

    def _watch(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:  # read to the end: a full pipe would block the JVM
            self._log = [*self._log[-200:], line]
            if self.started is None and self.marker in line:
                self.started = time.monotonic()
                self._seen.set()

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def peak_rss_mb(self) -> float:
        from bench.process import peak_rss_mb

        return peak_rss_mb(self._proc.pid) if self.alive() and self._proc else 0.0

    def tail(self) -> str:
        return "".join(self._log[-30:])

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(60)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
