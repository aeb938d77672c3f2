"""Sluiceway's logical column types as DuckDB types, and the cast from the event's encoding.

| logical | DuckDB | from the event |
|---|---|---|
| int16 int32 int64 | SMALLINT INTEGER BIGINT | JSON integer |
| float32 float64 | FLOAT (REAL) DOUBLE | number, or "NaN"/"Infinity"/"-Infinity" |
| decimal(p, s), p <= 38 | DECIMAL(p, s) | exact string |
| decimal unconstrained or p > 38 | VARCHAR | exact string (DuckDB stops at 38 digits) |
| boolean | BOOLEAN | |
| string | VARCHAR | |
| uuid | UUID | |
| bytes | BLOB | base64 |
| date, time, timestamp, timestamptz | DATE, TIME/TIMETZ, TIMESTAMP, TIMESTAMPTZ | ISO 8601 |
| interval | VARCHAR | ISO 8601 duration |
| json | JSON | JSON text |
| array of T | T[] | JSON array |
"""

from __future__ import annotations

from streaming.events import ColumnSchema

__all__ = ["cast_expression", "duckdb_type"]

# Spelled as DuckDB's information_schema reports them, so a stored column compares equal.
_SIMPLE = {
    "int16": "SMALLINT", "int32": "INTEGER", "int64": "BIGINT", "float32": "FLOAT",
    "float64": "DOUBLE", "boolean": "BOOLEAN", "string": "VARCHAR", "uuid": "UUID",
    "bytes": "BLOB", "date": "DATE", "timestamp": "TIMESTAMP",
    "timestamptz": "TIMESTAMP WITH TIME ZONE", "interval": "VARCHAR", "json": "JSON",
}  # fmt: skip


def _scalar(logical: str, column: ColumnSchema | None = None) -> str:
    if logical == "decimal":
        if column is None or column.precision is None or column.precision > 38:
            return "VARCHAR"
        return f"DECIMAL({column.precision},{max(column.scale or 0, 0)})"
    if logical == "time":
        timetz = column is not None and column.source_type == "timetz"
        return "TIME WITH TIME ZONE" if timetz else "TIME"
    return _SIMPLE.get(logical, "VARCHAR")


def duckdb_type(column: ColumnSchema) -> str:
    """The DuckDB column type for a logical column."""
    if column.type == "array":
        return f"{_scalar(column.items or 'string')}[]"
    return _scalar(column.type, column)


def cast_expression(column: ColumnSchema, ref: str) -> str:
    """SQL turning the staged string ``ref`` into the column's DuckDB value."""
    target = duckdb_type(column)
    if column.type == "bytes":
        return f"from_base64({ref})"
    if column.type == "array":
        return f"CAST(CAST({ref} AS JSON) AS {target})"
    if target == "VARCHAR":
        return ref
    return f"CAST({ref} AS {target})"
