"""The generated broker configuration for one and three brokers."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from sluiceway.settings import load_settings
from stack import kafka
from stack.kafka import KafkaService


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines())


def test_single_broker(tmp_path: Path) -> None:
    props = _props(KafkaService(load_settings(state_dir=tmp_path)).server_properties(1))
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["min.insync.replicas"] == "1"
    assert props["log.dirs"].startswith(str(tmp_path / "kafka" / "cluster-1"))


def test_three_brokers_replicate_three_ways(tmp_path: Path) -> None:
    service = KafkaService(load_settings(state_dir=tmp_path, kafka={"brokers": 3}))
    props = _props(service.server_properties(2))
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == (
        "1@127.0.0.1:19093,2@127.0.0.1:19193,3@127.0.0.1:19293"
    )
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19192"
    assert props["default.replication.factor"] == "3"
    assert props["min.insync.replicas"] == "2"
    assert props["transaction.state.log.min.isr"] == "2"
    assert [spec.name for spec in service.processes()] == ["kafka-1", "kafka-2", "kafka-3"]


def test_cluster_ids_never_start_with_a_dash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The storage tool would read a leading '-' as an option (1 id in 64 without care)."""
    dashed = uuid.UUID(bytes=b"\xfb" + bytes(15))  # its urlsafe base64 starts with '-'
    drawn = iter([dashed, uuid.UUID(int=1)])
    monkeypatch.setattr(kafka.uuid, "uuid4", lambda: next(drawn))
    cluster_id = KafkaService(load_settings(state_dir=tmp_path))._cluster_id()
    assert not cluster_id.startswith("-")
    assert len(cluster_id) == 22
