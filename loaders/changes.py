"""Change events as loaders read them back from Kafka: the consumer side of the contract.

`Change.parse` accepts both serialisations capture writes (plain JSON and Connect JSON) and
returns None for tombstones, which carry nothing a target needs (the delete before them did).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from sluiceway.errors import SinkFatal

__all__ = ["Change", "TableRef"]

TableRef = tuple[str, str]  # (schema, table) in the source


@dataclass(slots=True)
class Change:
    """One change of one row, with where it came from in Kafka."""

    topic: str
    partition: int
    offset: int
    table: TableRef
    op: str  # c u d r t
    key: dict[str, Any] | None
    row: dict[str, Any] | None  # after; before for deletes
    position: tuple[int, int]
    ts_ms: int  # when the change was committed in the source (else captured)
    schema_id: str | None
    unchanged: list[str] = field(default_factory=list)

    @classmethod
    def parse(
        cls, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None
    ) -> Change | None:
        """A change from a Kafka record (None for a tombstone).

        Raises:
            SinkFatal: the record is not a change event (wrong topic, corrupt bytes).
        """
        if value is None:
            return None
        try:
            envelope = orjson.loads(value)
            if "payload" in envelope and "schema" in envelope:
                envelope = envelope["payload"]
            decoded_key = orjson.loads(key) if key else None
            if isinstance(decoded_key, dict) and "payload" in decoded_key:
                decoded_key = decoded_key["payload"]
            source = envelope["source"]
            op = envelope["op"]
            row = envelope["before"] if op == "d" else envelope["after"]
            position = (int(source.get("commit_lsn") or 0), int(source.get("lsn") or 0))
            return cls(
                topic,
                partition,
                offset,
                (source["schema"], source["table"]),
                op,
                decoded_key,
                row,
                position,
                int(source.get("ts_ms") or envelope.get("ts_ms") or 0),  # commit time
                source.get("schema_id"),
                envelope.get("unchanged", []),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise SinkFatal(
                f"{topic}[{partition}]@{offset} is not a change event: {type(exc).__name__}: {exc}"
            ) from exc
