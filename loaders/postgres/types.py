"""Sluiceway's logical column types as PostgreSQL types, and the cast from the event encoding.

| logical | PostgreSQL | from the event |
|---|---|---|
| int16 int32 int64 | smallint integer bigint | |
| float32 float64 | real, double precision | "NaN"/"Infinity" accepted |
| decimal(p, s) / unconstrained | numeric(p, s) / numeric | exact string |
| boolean, string, uuid | boolean, text (or the source's varchar(n)), uuid | |
| bytes | bytea | base64, decoded in SQL |
| date, time, timestamp, timestamptz | the same types (time with time zone for timetz) | ISO 8601 |
| interval | interval | ISO 8601 duration (PostgreSQL parses it) |
| json | jsonb (json if the source's was json) | JSON text |
| array of T | T[] (one dimension) | JSON array |

Dates before year 1 (``-0043-03-15``, astronomical years) are converted with ``make_date``;
timestamps before year 1 are outside PostgreSQL's input syntax and stop the load.
"""

from __future__ import annotations

from streaming.events import ColumnSchema

__all__ = ["cast_expression", "postgres_type"]

# Spelled as PostgreSQL's format_type() spells them, so a stored column compares equal.
_SIMPLE = {
    "int16": "smallint", "int32": "integer", "int64": "bigint", "float32": "real",
    "float64": "double precision", "boolean": "boolean", "string": "text", "uuid": "uuid",
    "bytes": "bytea", "date": "date", "timestamp": "timestamp without time zone",
    "timestamptz": "timestamp with time zone", "interval": "interval", "json": "jsonb",
    "decimal": "numeric", "time": "time without time zone",
}  # fmt: skip


def _scalar(logical: str, column: ColumnSchema | None = None) -> str:
    if column is not None:
        source = column.source_type
        if logical == "decimal" and column.precision is not None:
            return f"numeric({column.precision},{column.scale or 0})"
        if logical == "time" and source == "timetz":
            return "time with time zone"
        if logical == "json" and source == "json":
            return "json"
        if logical == "string" and source.startswith("varchar("):
            return "character varying" + source[len("varchar") :]
        if logical == "string" and source.startswith("bpchar("):
            return "character" + source[len("bpchar") :]
    return _SIMPLE.get(logical, "text")


def postgres_type(column: ColumnSchema) -> str:
    """The PostgreSQL column type for a logical column."""
    if column.type == "array":
        return f"{_scalar(column.items or 'string')}[]"
    return _scalar(column.type, column)


def cast_expression(column: ColumnSchema, ref: str) -> str:
    """SQL turning the staged text ``ref`` into the column's PostgreSQL value."""
    target = postgres_type(column)
    if column.type == "bytes":
        return f"decode({ref}, 'base64')"
    if column.type == "date":
        # ISO 8601 astronomical years ('-0043-03-15' is 44 BC, '0000-…' is 1 BC) are outside
        # PostgreSQL's input syntax; make_date takes BC years as negative numbers.
        part = f"split_part(ltrim({ref}, '-'), '-', %d)::int"
        return (
            f"(CASE WHEN {ref} ~ '^(-|0000-)' THEN make_date(-({part % 1} + 1), {part % 2}, "
            f"{part % 3}) ELSE CAST({ref} AS date) END)"
        )
    if column.type == "array":
        element = target[:-2]
        return (
            f"(CASE WHEN {ref} IS NULL THEN NULL ELSE ARRAY(SELECT CAST(e AS {element}) "
            f"FROM jsonb_array_elements_text(CAST({ref} AS jsonb)) AS e) END)"
        )
    if target == "text":
        return ref
    return f"CAST({ref} AS {target})"
