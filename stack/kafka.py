"""Apache Kafka 4.x in KRaft mode from Maven Central jars: one broker, or three for fault tests.

`install` resolves ``stack/kafka/pom.xml`` with mvn and copies the runtime jars into
``<cache>/kafka-libs`` (kept while the pom's hash is unchanged). Each node runs as broker and
controller (combined mode) with a static voter set; node i listens on ``kafka.port + 100*i``
for clients and ``kafka.controller_port + 100*i`` for the quorum, on 127.0.0.1 only. A
cluster of n nodes keeps its storage in ``<state>/kafka/cluster-<n>`` (formatted once with the
storage tool), so the one- and three-broker clusters never share a log directory. With three
brokers the defaults are replication factor 3 and min.insync.replicas 2.
"""

from __future__ import annotations

import base64
import shutil
import uuid
from pathlib import Path

from sluiceway.connect import kafka_admin
from stack.process import ProcessSpec
from stack.service import Service, fetch_jars, jars_fetched, port_is_free, run_tool

__all__ = ["LOG4J2_PROPERTIES", "KafkaService"]

POM = Path(__file__).parent / "kafka" / "pom.xml"

LOG4J2_PROPERTIES = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""


class KafkaService(Service):
    """The central log."""

    name = "kafka"
    start_timeout = 120.0

    @property
    def libs(self) -> Path:
        return self.settings.cache_dir / "kafka-libs"

    @property
    def cluster_dir(self) -> Path:
        return self.dir / f"cluster-{self.settings.kafka.brokers}"

    def missing(self) -> list[str]:
        missing = []
        if shutil.which("java") is None:
            missing.append("java not found: apt-get install openjdk-17-jre-headless")
        if not jars_fetched(POM, self.libs):
            missing.append(
                f"Kafka jars not fetched into {self.libs} (needs mvn: apt-get install maven)"
            )
        return missing

    def apt_packages(self) -> list[str]:
        wanted = {"java": "openjdk-17-jre-headless", "mvn": "maven"}
        return [pkg for binary, pkg in wanted.items() if shutil.which(binary) is None]

    def install(self) -> None:
        fetch_jars(POM, self.libs, "kafka")

    def ports(self) -> list[tuple[str, int]]:
        kafka = self.settings.kafka
        return [("kafka.port", p) for p in kafka.broker_ports()] + [
            ("kafka.controller_port", p) for p in kafka.controller_ports()
        ]

    def address(self) -> str:
        return self.settings.kafka.bootstrap()

    def _cluster_id(self) -> str:
        path = self.cluster_dir / "cluster.id"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            raw = "-"
            while raw.startswith("-"):  # as Kafka's Uuid.randomUuid: never read as an option
                raw = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            path.write_text(raw)
        return path.read_text().strip()

    def server_properties(self, node: int) -> str:
        """The server.properties of node ``node`` (1-based)."""
        kafka = self.settings.kafka
        n = kafka.brokers
        port = kafka.broker_ports()[node - 1]
        controller = kafka.controller_ports()[node - 1]
        voters = ",".join(f"{i + 1}@127.0.0.1:{p}" for i, p in enumerate(kafka.controller_ports()))
        replication = min(n, 3)
        min_isr = 2 if n >= 3 else 1
        props = {
            "process.roles": "broker,controller",
            "node.id": node,
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": self.cluster_dir / f"broker-{node}" / "data",
            "num.partitions": 1,
            "default.replication.factor": replication,
            "min.insync.replicas": min_isr,
            "offsets.topic.replication.factor": replication,
            "transaction.state.log.replication.factor": replication,
            "transaction.state.log.min.isr": min_isr,
            "share.coordinator.state.topic.replication.factor": replication,
            "share.coordinator.state.topic.min.isr": min_isr,
            "group.initial.rebalance.delay.ms": 0,
            # Sluiceway creates its topics with explicit settings; a typo must not create one.
            "auto.create.topics.enable": "false",
            "log.retention.hours": 168,
            "log.segment.bytes": 268435456,
        }
        return "".join(f"{key}={value}\n" for key, value in props.items())

    def prepare(self) -> None:
        cluster_id = self._cluster_id()
        (self.dir / "log4j2.properties").write_text(LOG4J2_PROPERTIES)
        for node in range(1, self.settings.kafka.brokers + 1):
            node_dir = self.cluster_dir / f"broker-{node}"
            node_dir.mkdir(parents=True, exist_ok=True)
            props = node_dir / "server.properties"
            props.write_text(self.server_properties(node))
            if (node_dir / "data" / "meta.properties").exists():
                continue
            run_tool(
                [
                    *self._java(),
                    "kafka.tools.StorageTool",
                    "format",
                    f"--cluster-id={cluster_id}",
                    f"--config={props}",
                    "--ignore-formatted",
                ],
                f"kafka: formatting {node_dir} failed",
            )

    def _java(self) -> list[str]:
        return [
            "java",
            f"-Xmx{self.settings.kafka.heap_mb}m",
            f"-Xms{min(256, self.settings.kafka.heap_mb)}m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
            "-cp",
            f"{self.libs}/*",
        ]

    def processes(self) -> list[ProcessSpec]:
        specs = []
        for node in range(1, self.settings.kafka.brokers + 1):
            props = self.cluster_dir / f"broker-{node}" / "server.properties"
            argv = [*self._java(), "kafka.Kafka", str(props)]
            specs.append(ProcessSpec(f"kafka-{node}", argv, cwd=self.dir, stop_timeout=60))
        return specs

    def check(self) -> str:
        # Probe the sockets first: librdkafka would log every refused connection meanwhile.
        closed = [p for p in self.settings.kafka.broker_ports() if port_is_free(p)]
        if closed:
            raise ConnectionRefusedError(f"nothing listens on port(s) {closed}")
        metadata = kafka_admin(self.settings.kafka).list_topics(timeout=3)
        brokers = len(metadata.brokers)
        wanted = self.settings.kafka.brokers
        if brokers < wanted:
            raise RuntimeError(f"{brokers} of {wanted} brokers registered")
        return f"{brokers} broker(s), controller {metadata.controller_id}"
