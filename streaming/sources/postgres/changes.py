"""Rows of one PostgreSQL table into change events: the envelope, the key, the topic.

A `TableCodec` is built from a pgoutput Relation message (or, for a snapshot, from the same
columns read from the catalog) and converts text-format rows, from pgoutput or from COPY, with
one converter per column. When the table's shape changes, PostgreSQL sends a new Relation
message before the first change of the new shape, and capture builds a new codec from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sluiceway.pipeline import Pipeline
from streaming.events import (
    UNAVAILABLE,
    ChangeEvent,
    ColumnSchema,
    ConnectSchema,
    Field,
    Op,
    TableSchema,
    topic_name,
)
from streaming.sources.postgres.pgoutput import UNCHANGED_TOAST, Column, Value
from streaming.sources.postgres.pgtypes import TypeRegistry

__all__ = ["CONNECTOR", "TableCodec", "column_schema", "connect_field"]

CONNECTOR = "postgresql"
VERSION = "sluiceway-0.1"

_CONNECT_TYPES = {
    "int2": ("int16", None),
    "int4": ("int32", None),
    "int8": ("int64", None),
    "oid": ("int64", None),
    "bool": ("boolean", None),
    "bytea": ("bytes", None),
    "json": ("string", "io.debezium.data.Json"),
    "jsonb": ("string", "io.debezium.data.Json"),
    "uuid": ("string", "io.debezium.data.Uuid"),
    "numeric": ("string", None),
    "date": ("string", "io.debezium.time.IsoDate"),
    "time": ("string", "io.debezium.time.IsoTime"),
    "timetz": ("string", "io.debezium.time.ZonedTime"),
    "timestamp": ("string", "io.debezium.time.IsoTimestamp"),
    "timestamptz": ("string", "io.debezium.time.ZonedTimestamp"),
    "interval": ("string", "io.debezium.time.Interval"),
}


_LOGICAL = {
    "int2": "int16", "int4": "int32", "int8": "int64", "oid": "int64",
    "float4": "float32", "float8": "float64", "numeric": "decimal", "bool": "boolean",
    "bytea": "bytes", "date": "date", "time": "time", "timetz": "time",
    "timestamp": "timestamp", "timestamptz": "timestamptz", "interval": "interval",
    "json": "json", "jsonb": "json", "uuid": "uuid",
}  # fmt: skip


def _logical(oid: int, types: TypeRegistry) -> str:
    pg_type = types.base(oid)
    if pg_type is None:
        return "string"
    if pg_type.category == "A" and pg_type.element:
        return "array"
    return _LOGICAL.get(pg_type.name, "string")


def column_schema(column: Column, key: bool, types: TypeRegistry) -> ColumnSchema:
    """A column's logical type; numeric's precision and scale come from its type modifier."""
    logical = _logical(column.type_oid, types)
    name = types.name(column.type_oid)
    precision = scale = None
    items = None
    modifier = column.type_modifier
    if logical == "decimal" and modifier >= 4:
        precision = ((modifier - 4) >> 16) & 0xFFFF
        scale = (modifier - 4) & 0xFFFF
        scale = scale - 0x10000 if scale > 0x7FFF else scale  # PostgreSQL 15: negative scales
        name = f"numeric({precision},{scale})"
    elif name in ("varchar", "bpchar") and modifier >= 4:
        name = f"{name}({modifier - 4})"
    if logical == "array":
        base = types.base(column.type_oid)
        items = _logical(base.element, types) if base is not None else "string"
    return ColumnSchema(column.name, logical, name, key, precision, scale, items)


def connect_field(name: str, oid: int, types: TypeRegistry) -> Field:
    """The Kafka Connect field of a column (floats are strings when NaN/Infinity: see README)."""
    pg_type = types.base(oid)
    if pg_type is not None and pg_type.category == "A" and pg_type.element:
        return Field(name, "array", True, None, connect_field("item", pg_type.element, types))
    type_name = pg_type.name if pg_type else "text"
    if type_name in ("float4", "float8"):
        return Field(name, "float64" if type_name == "float8" else "float32")
    connect, semantic = _CONNECT_TYPES.get(type_name, ("string", None))
    return Field(name, connect, True, semantic)


class TableCodec:
    """Converts rows of one table (in one shape) into change events."""

    def __init__(
        self,
        pipeline: Pipeline,
        database: str,
        schema: str,
        table: str,
        columns: Sequence[Column],
        key: Sequence[str],
        types: TypeRegistry,
        oid: int = 0,
    ) -> None:
        self.oid = oid
        self.schema = schema
        self.table = table
        self.names = [c.name for c in columns]
        self.type_oids = [c.type_oid for c in columns]
        self.converters = [types.converter(c.type_oid) for c in columns]
        self.key = tuple(k for k in key if k in self.names)
        self._key_index = [self.names.index(k) for k in self.key]
        self.topic = topic_name(pipeline.topic_prefix, schema, table)
        self.server = pipeline.topic_prefix
        self.database = database
        self.table_schema = TableSchema(
            schema,
            table,
            tuple(column_schema(c, c.name in self.key, types) for c in columns),
        )
        self.schema_id = self.table_schema.id
        self.connect = ConnectSchema(
            self.server,
            schema,
            table,
            [connect_field(c.name, c.type_oid, types) for c in columns],
        )

    def row(self, values: Sequence[Value]) -> tuple[dict[str, Any], list[str]]:
        """A row dict of typed values, and the names of unchanged TOASTed columns."""
        if UNCHANGED_TOAST not in values:  # the common case, one pass in C
            return {
                name: None if value is None else convert(value)  # type: ignore[arg-type]
                for name, convert, value in zip(self.names, self.converters, values, strict=False)
            }, []
        out: dict[str, Any] = {}
        unchanged: list[str] = []
        for name, convert, value in zip(self.names, self.converters, values, strict=False):
            if value is None:
                out[name] = None
            elif value is UNCHANGED_TOAST:
                out[name] = UNAVAILABLE
                unchanged.append(name)
            else:
                out[name] = convert(value)  # type: ignore[arg-type]
        return out, unchanged

    def key_of(self, row: dict[str, Any]) -> dict[str, Any] | None:
        """The message key: the primary key columns (None for a table without one)."""
        if not self.key:
            return None
        return {k: row[k] for k in self.key}

    def source(
        self, ts_ms: int, snapshot: str, tx_id: int | None, lsn: int, commit_lsn: int
    ) -> dict[str, Any]:
        """The envelope's source block."""
        return {**self.source_template(ts_ms, snapshot, tx_id, commit_lsn), "lsn": lsn}

    def source_template(
        self, ts_ms: int, snapshot: str, tx_id: int | None, commit_lsn: int
    ) -> dict[str, Any]:
        """The source block without ``lsn``: the same for every change of one transaction."""
        return {
            "version": VERSION,
            "connector": CONNECTOR,
            "name": self.server,
            "ts_ms": ts_ms,
            "snapshot": snapshot,
            "db": self.database,
            "schema": self.schema,
            "table": self.table,
            "txId": tx_id,
            "commit_lsn": commit_lsn,
            "schema_id": self.schema_id,
        }

    def event(
        self,
        op: Op,
        before: Sequence[Value] | None,
        after: Sequence[Value] | None,
        source: dict[str, Any],
        ts_ms: int,
    ) -> ChangeEvent:
        """A change event; with a complete before image, unchanged TOAST values are filled."""
        before_row = self.row(before)[0] if before is not None else None
        after_row, unchanged = self.row(after) if after is not None else (None, [])
        if unchanged and before_row is not None and after_row is not None:
            # REPLICA IDENTITY FULL: the old row holds the real value (PostgreSQL flattens
            # TOASTed values into the old tuple), so the new row can be made whole.
            still = []
            for name in unchanged:
                old = before_row.get(name, UNAVAILABLE)
                if old == UNAVAILABLE:
                    still.append(name)
                else:
                    after_row[name] = old
            unchanged = still
        keyed = after_row if after_row is not None else before_row
        key = self.key_of(keyed) if keyed is not None else None
        return ChangeEvent(
            self.topic, key, op, before_row, after_row, source, ts_ms, None, unchanged
        )
