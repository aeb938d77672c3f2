"""Topic options: Connect JSON, compaction with tombstones, transaction metadata."""

from __future__ import annotations

import orjson
import pytest
from confluent_kafka.admin import ConfigResource

from sluiceway.connect import kafka_admin
from sluiceway.settings import Settings
from stack.manager import Stack
from tests.integration.capture_support import (
    capture_running,
    make_pipeline,
    read_topic,
    temporary_database,
    wait_caught_up,
)
from tests.integration.conftest import require

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_connect_json_tombstones_compaction_and_transactions(
    settings: Settings, stack: Stack, unique: str
) -> None:
    require(stack, "postgres")
    topics = {
        "format": "connect-json",
        "cleanup_policy": "compact",
        "transaction_topic": True,
        "partitions": 1,
    }
    with temporary_database(settings, unique) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id int PRIMARY KEY, price numeric(8, 2), tags text[])")
        with capture_running(settings, make_pipeline(unique, topics=topics)) as capture:
            wait_caught_up(capture, conn)
            cur.execute("BEGIN")
            cur.execute("INSERT INTO t VALUES (1, 9.99, '{a,b}'), (2, 0.50, NULL)")
            cur.execute("COMMIT")
            cur.execute("DELETE FROM t WHERE id = 1")
            wait_caught_up(capture, conn)
        topic = f"{unique}.public.t"
        admin = kafka_admin(settings.kafka)
        config = admin.describe_configs([ConfigResource("topic", topic)])
        assert next(iter(config.values())).result(10)["cleanup.policy"].value == "compact"

        records = read_topic(settings, topic)
        assert [value is None for _, value in records] == [False, False, False, True]
        key, value = records[0]
        assert key is not None and value is not None
        connect_key = orjson.loads(key)
        assert connect_key["payload"] == {"id": 1}
        assert connect_key["schema"]["fields"] == [
            {"type": "int32", "optional": False, "field": "id"}
        ]
        envelope = orjson.loads(value)
        assert envelope["payload"]["after"] == {"id": 1, "price": "9.99", "tags": ["a", "b"]}
        after_schema = {f["field"]: f for f in envelope["schema"]["fields"]}["after"]
        fields = {f["field"]: f for f in after_schema["fields"]}
        assert fields["tags"]["type"] == "array" and fields["tags"]["items"]["type"] == "string"
        assert records[3][0] == records[2][0]  # the tombstone carries the deleted row's key

        markers = [orjson.loads(v) for _, v in read_topic(settings, f"{unique}.transaction") if v]
        assert [(m["status"], m.get("event_count")) for m in markers] == [
            ("BEGIN", None), ("END", 2), ("BEGIN", None), ("END", 1)
        ]  # fmt: skip
        source = envelope["payload"]["source"]
        assert markers[0]["id"] == f"{source['txId']}:{source['commit_lsn']}"
