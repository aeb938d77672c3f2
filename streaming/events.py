"""The change-event contract: the Debezium envelope every source emits and every loader reads.

A change event is keyed by the row's primary key and its value is the envelope::

    {"before": {...} | null, "after": {...} | null,
     "source": {"version", "connector", "name", "db", "schema", "table", "ts_ms",
                "snapshot", "txId", "lsn", "commit_lsn", ...},
     "op": "c" | "u" | "d" | "r" | "t", "ts_ms": <capture time>,
     "transaction": {"id", "total_order", "data_collection_order"} | absent,
     "unchanged": ["col", ...] | absent}

``unchanged`` lists TOASTed columns an UPDATE did not touch and PostgreSQL did not resend: their
``after`` value is Debezium's placeholder ``__debezium_unavailable_value``, and loaders keep the
value they already hold. Ordering per key is by `position`: (commit_lsn, lsn) for PostgreSQL —
commit order is the order in which rows changed, and a row's changes within one transaction
follow their LSNs. Snapshot rows carry the position of the snapshot, so any change committed
after it sorts after them.

Two serialisations: plain JSON (the default), and Kafka Connect's JsonConverter form with
``schemas.enable=true`` (``{"schema": ..., "payload": ...}``) so Connect sinks can read topics.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

__all__ = [
    "UNAVAILABLE",
    "ChangeEvent",
    "ColumnSchema",
    "ConnectSchema",
    "Field",
    "Op",
    "TableSchema",
    "encode_json",
    "topic_name",
]

Op = Literal["c", "u", "d", "r", "t"]
UNAVAILABLE = "__debezium_unavailable_value"
_TOPIC_UNSAFE = re.compile(r"[^a-zA-Z0-9._-]")


def topic_name(*parts: str) -> str:
    """A Kafka topic name from its parts: characters Kafka refuses become '_' (as Debezium)."""
    return ".".join(_TOPIC_UNSAFE.sub("_", part) for part in parts if part)


@dataclass(slots=True)
class ChangeEvent:
    """One change of one row, ready to serialise."""

    topic: str
    key: dict[str, Any] | None
    op: Op
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    source: dict[str, Any]
    ts_ms: int
    transaction: dict[str, Any] | None = None
    unchanged: list[str] = field(default_factory=list)

    def value(self) -> dict[str, Any]:
        """The envelope as a dict."""
        envelope: dict[str, Any] = {
            "before": self.before,
            "after": self.after,
            "source": self.source,
            "op": self.op,
            "ts_ms": self.ts_ms,
        }
        if self.transaction is not None:
            envelope["transaction"] = self.transaction
        if self.unchanged:
            envelope["unchanged"] = self.unchanged
        return envelope


@dataclass(frozen=True, slots=True)
class ColumnSchema:
    """A column's type in Sluiceway's logical terms, plus the source's own spelling.

    ``type`` is one of int16 int32 int64 float32 float64 decimal boolean string bytes date
    time timestamp timestamptz interval json uuid array; ``decimal`` carries precision and
    scale when the source declares them (None: unconstrained); ``array`` names its ``items``.
    """

    name: str
    type: str
    source_type: str
    key: bool = False
    precision: int | None = None
    scale: int | None = None
    items: str | None = None


@dataclass(frozen=True, slots=True)
class TableSchema:
    """One shape of one table. Published once to ``<prefix>.schemas`` (compacted, keyed by
    `id`); every event names the shape it has in ``source.schema_id``, so loaders create and
    evolve target tables with exact types without asking the source."""

    schema: str
    table: str
    columns: tuple[ColumnSchema, ...]
    _id: str = field(default="", init=False, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        """The record published to the schema topic."""
        return {
            "schema": self.schema,
            "table": self.table,
            "columns": [
                {k: getattr(c, k) for k in ColumnSchema.__slots__ if getattr(c, k) is not None}
                for c in self.columns
            ],
        }

    @property
    def id(self) -> str:
        """A content hash: the same shape always has the same id (computed once)."""
        if not self._id:
            canonical = orjson.dumps(self.to_json(), option=orjson.OPT_SORT_KEYS)
            object.__setattr__(self, "_id", hashlib.sha256(canonical).hexdigest()[:16])
        return self._id

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TableSchema:
        """Read a schema record back."""
        return cls(data["schema"], data["table"], tuple(ColumnSchema(**c) for c in data["columns"]))

    @property
    def key(self) -> tuple[str, ...]:
        """The primary key columns."""
        return tuple(c.name for c in self.columns if c.key)


def encode_json(value: Any) -> bytes:
    """Serialise with orjson (NaN never reaches here: the type layer turns it into a string)."""
    return orjson.dumps(value)


@dataclass(frozen=True, slots=True)
class Field:
    """A column as Kafka Connect sees it."""

    name: str
    type: str  # int16 int32 int64 float32 float64 boolean string bytes array
    optional: bool = True
    semantic: str | None = None  # Connect schema name, e.g. io.debezium.data.Json
    items: Field | None = None


_SOURCE_FIELDS = [
    ("version", "string"), ("connector", "string"), ("name", "string"), ("ts_ms", "int64"),
    ("snapshot", "string"), ("db", "string"), ("schema", "string"), ("table", "string"),
    ("txId", "int64"), ("lsn", "int64"), ("commit_lsn", "int64"), ("schema_id", "string"),
    ("file", "string"), ("pos", "int64"), ("row", "int32"), ("server_id", "int64"),
    ("gtid", "string"),
]  # fmt: skip


def _field_schema(column: Field) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": column.type, "optional": column.optional}
    if column.semantic:
        schema["name"] = column.semantic
    if column.items is not None:
        schema["items"] = _field_schema(column.items)
    schema["field"] = column.name
    return schema


class ConnectSchema:
    """The JsonConverter schema of one table's envelope, built once per table shape."""

    def __init__(self, server: str, schema: str, table: str, columns: list[Field]) -> None:
        base = f"{server}.{schema}.{table}"
        row = {
            "type": "struct",
            "optional": True,
            "name": f"{base}.Value",
            "fields": [_field_schema(c) for c in columns],
        }
        self.value_schema = {
            "type": "struct",
            "optional": False,
            "name": f"{base}.Envelope",
            "fields": [
                {**row, "field": "before"},
                {**row, "field": "after"},
                {
                    "type": "struct",
                    "optional": False,
                    "name": "io.debezium.connector.postgresql.Source",
                    "field": "source",
                    "fields": [
                        {"type": t, "optional": name not in ("connector", "name"), "field": name}
                        for name, t in _SOURCE_FIELDS
                    ],
                },
                {"type": "string", "optional": False, "field": "op"},
                {"type": "int64", "optional": True, "field": "ts_ms"},
                {
                    "type": "array",
                    "optional": True,
                    "items": {"type": "string", "optional": False},
                    "field": "unchanged",
                },
            ],
        }
        self.key_schema_by_columns: dict[tuple[str, ...], dict[str, Any]] = {}
        self._columns = {c.name: c for c in columns}
        self._base = base

    def key_schema(self, names: tuple[str, ...]) -> dict[str, Any]:
        """The key struct's schema for the given key columns."""
        found = self.key_schema_by_columns.get(names)
        if found is None:
            fields = [
                _field_schema(Field(n, self._columns[n].type, False, self._columns[n].semantic))
                for n in names
                if n in self._columns
            ]
            found = {"type": "struct", "optional": False, "name": f"{self._base}.Key"}
            found["fields"] = fields
            self.key_schema_by_columns[names] = found
        return found
