"""Create change topics with the pipeline's settings (idempotent)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError as ConfluentKafkaError
from confluent_kafka import KafkaException
from confluent_kafka.admin import NewTopic

from sluiceway.errors import KafkaFatal, KafkaUnavailable
from sluiceway.pipeline import TopicSettings

__all__ = ["ensure_topics", "topic_config"]


def topic_config(settings: TopicSettings) -> dict[str, str]:
    """Topic-level configuration from the pipeline's topic settings."""
    return {
        "cleanup.policy": settings.cleanup_policy,
        "retention.ms": str(settings.retention_ms),
    }


def ensure_topics(
    admin: Any, names: Iterable[str], settings: TopicSettings, *, partitions: int | None = None
) -> list[str]:
    """Create the topics that do not exist yet; returns those created.

    Raises:
        KafkaUnavailable: the cluster did not answer.
        KafkaFatal: Kafka refused to create a topic (bad settings, authorization).
    """
    wanted = sorted(set(names))
    try:
        existing = set(admin.list_topics(timeout=15).topics)
    except KafkaException as exc:
        raise KafkaUnavailable(f"cannot list topics: {exc}") from exc
    missing = [name for name in wanted if name not in existing]
    if not missing:
        return []
    new = [
        NewTopic(
            name,
            num_partitions=partitions or settings.partitions,
            replication_factor=settings.replication_factor or -1,
            config=topic_config(settings),
        )
        for name in missing
    ]
    for name, future in admin.create_topics(new, operation_timeout=30).items():
        try:
            future.result(timeout=60)
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() == ConfluentKafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise KafkaFatal(f"cannot create topic {name}: {error.str()}") from exc
    _wait_visible(admin, missing)
    return missing


def _wait_visible(admin: Any, names: list[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        topics = admin.list_topics(timeout=10).topics
        if all(name in topics and topics[name].error is None for name in names):
            return
        time.sleep(0.2)
    raise KafkaUnavailable(f"topics {names} not visible after {timeout:.0f}s")
