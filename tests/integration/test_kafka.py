"""Kafka: topic admin and a produce/consume round trip through confluent-kafka."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import ConfigResource, NewTopic

from sluiceway.connect import kafka_admin
from sluiceway.settings import Settings
from stack.manager import Stack
from tests.integration.conftest import require

pytestmark = pytest.mark.integration


def test_topic_admin_and_round_trip(settings: Settings, stack: Stack, unique: str) -> None:
    require(stack, "kafka")
    admin = kafka_admin(settings.kafka)
    topic = f"{unique}.roundtrip"
    new = NewTopic(topic, num_partitions=3, config={"cleanup.policy": "compact"})
    admin.create_topics([new])[topic].result(timeout=20)
    described = admin.describe_configs([ConfigResource("topic", topic)])
    config = next(iter(described.values())).result(timeout=10)
    assert config["cleanup.policy"].value == "compact"
    assert len(admin.list_topics(topic, timeout=10).topics[topic].partitions) == 3

    producer = Producer(
        {**settings.kafka.client_config(), "acks": "all", "enable.idempotence": True}
    )
    sent = {f"key-{i}".encode(): f"value-{i}".encode() for i in range(100)}
    for key, value in sent.items():
        producer.produce(topic, key=key, value=value)
    assert producer.flush(20) == 0

    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": unique,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    received: dict[bytes, bytes] = {}
    try:
        for _ in range(200):
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                received[msg.key()] = msg.value()
            if len(received) == len(sent):
                break
    finally:
        consumer.close()
    assert received == sent

    admin.delete_topics([topic])[topic].result(timeout=20)
    # The deletion is acknowledged before every broker's metadata forgets the topic.
    deadline = time.monotonic() + 30
    while topic in admin.list_topics(timeout=10).topics and time.monotonic() < deadline:
        time.sleep(0.2)
    assert topic not in admin.list_topics(timeout=10).topics
