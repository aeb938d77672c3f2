"""Sluiceway's logical column types as Snowflake types, and the cast from the event encoding.

| logical | Snowflake |
|---|---|
| int16 int32 int64 | NUMBER(5,0) NUMBER(10,0) NUMBER(19,0) |
| float32 float64 | FLOAT |
| decimal(p, s), p <= 38 | NUMBER(p, s) |
| decimal unconstrained or p > 38 | VARCHAR (exact text) |
| boolean, string, uuid | BOOLEAN, VARCHAR, VARCHAR |
| bytes | BINARY |
| date, time, timestamp, timestamptz | DATE, TIME, TIMESTAMP_NTZ, TIMESTAMP_TZ |
| interval, timetz | VARCHAR |
| json, arrays | VARIANT (PARSE_JSON) |
"""

from __future__ import annotations

from streaming.events import ColumnSchema

__all__ = ["cast_expression", "snowflake_type"]

_SIMPLE = {
    "int16": "NUMBER(5,0)", "int32": "NUMBER(10,0)", "int64": "NUMBER(19,0)",
    "float32": "FLOAT", "float64": "FLOAT", "boolean": "BOOLEAN", "string": "VARCHAR",
    "uuid": "VARCHAR", "bytes": "BINARY", "date": "DATE", "timestamp": "TIMESTAMP_NTZ",
    "timestamptz": "TIMESTAMP_TZ", "interval": "VARCHAR", "json": "VARIANT", "array": "VARIANT",
}  # fmt: skip


def snowflake_type(column: ColumnSchema) -> str:
    """The Snowflake column type for a logical column."""
    if column.type == "decimal":
        if column.precision is None or column.precision > 38:
            return "VARCHAR"
        return f"NUMBER({column.precision},{max(column.scale or 0, 0)})"
    if column.type == "time":
        return "VARCHAR" if column.source_type == "timetz" else "TIME"
    return _SIMPLE.get(column.type, "VARCHAR")


def cast_expression(column: ColumnSchema, ref: str) -> str:
    """SQL turning the staged VARCHAR ``ref`` into the column's Snowflake value."""
    target = snowflake_type(column)
    if target == "VARCHAR":
        return ref
    if target == "VARIANT":
        return f"PARSE_JSON({ref})"
    if target == "BINARY":
        return f"BASE64_DECODE_BINARY({ref})"
    return f"CAST({ref} AS {target})"
