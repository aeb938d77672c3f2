"""A second, isolated stack: three Kafka brokers and PostgreSQL on other ports and state.

It checks what users of the stack rely on: the cluster keeps accepting acks=all writes with a
broker down (replication factor 3, min.insync.replicas 2), `status` reports health, and `down`
leaves no process and no listening port behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import NewTopic

from sluiceway.connect import kafka_admin, postgres_connection
from sluiceway.settings import load_settings
from stack.manager import Stack
from stack.service import port_is_free

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _consume_all(config: dict[str, str], topic: str, expected: int, group: str) -> list[bytes]:
    consumer = Consumer({**config, "group.id": group, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    values: list[bytes] = []
    try:
        for _ in range(120):
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                values.append(msg.value())
            if len(values) >= expected:
                break
    finally:
        consumer.close()
    return values


def test_three_brokers_survive_one_loss_and_down_leaves_nothing(tmp_path: Path) -> None:
    settings = load_settings(
        state_dir=tmp_path / "state",
        kafka={"brokers": 3, "port": 29092, "controller_port": 29093, "heap_mb": 384},
        postgres={"port": 25432},
    )
    stack = Stack(settings)
    pg_home = stack.services["postgres"].home  # type: ignore[attr-defined]
    try:
        stack.up(["kafka", "postgres"], log=lambda _: None)
        rows = {row.name: row for row in stack.status(["kafka", "postgres"])}
        assert rows["kafka"].healthy and len(rows["kafka"].pids) == 3
        assert rows["postgres"].healthy
        conn = postgres_connection(settings.postgres)
        conn.close()

        config = settings.kafka.client_config()
        admin = kafka_admin(settings.kafka)
        topic = "replicated"
        admin.create_topics([NewTopic(topic, num_partitions=3)])[topic].result(timeout=30)
        partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
        assert all(len(p.replicas) == 3 for p in partitions.values())

        producer = Producer({**config, "acks": "all", "enable.idempotence": True})
        for i in range(50):
            producer.produce(topic, value=f"before-{i}".encode())
        assert producer.flush(30) == 0

        victim = next(p for p in stack.services["kafka"].running() if p.name == "kafka-3")
        os.killpg(victim.pid, signal.SIGKILL)
        for i in range(50):
            producer.produce(topic, value=f"after-{i}".encode())
        assert producer.flush(60) == 0  # two in-sync replicas remain: acks=all still succeeds

        values = _consume_all(config, topic, 100, "lifecycle")
        assert sorted(values) == sorted(
            [f"before-{i}".encode() for i in range(50)] + [f"after-{i}".encode() for i in range(50)]
        )

        cli = subprocess.run(
            [sys.executable, "-m", "sluiceway.cli", "stack", "status", "postgres"],
            env={
                **os.environ,
                "SLUICEWAY_STATE_DIR": str(settings.state_dir),
                "SLUICEWAY_POSTGRES__PORT": "25432",
            },
            capture_output=True,
            text=True,
            check=False,
        )
        assert cli.returncode == 0, cli.stdout + cli.stderr
        assert "healthy" in cli.stdout
    finally:
        pids = [p.pid for name in ("kafka", "postgres") for p in stack.services[name].running()]
        stack.down(["kafka", "postgres"], log=lambda _: None)
        if pg_home != stack.services["postgres"].dir:
            shutil.rmtree(pg_home.parent, ignore_errors=True)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid), f"process {pid} is still alive"
    for _setting, port in settings.local_ports():
        if _setting.startswith(("kafka", "postgres")):
            assert port_is_free(port), f"port {port} still listens after down"
    assert not list((settings.state_dir / "pids").glob("*.pid"))


def _zombie(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "Z"
