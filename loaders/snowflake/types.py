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

Widening (`widens`): a NUMBER to a larger precision with the same scale (Snowflake cannot
change a scale in place); nothing else — a change that needs it stops the table's load.
"""

from __future__ import annotations

from streaming.events import ColumnSchema

__all__ = ["cast_expression", "snowflake_type", "spelled", "widens"]

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


_NAMES = {"FIXED": "NUMBER", "REAL": "FLOAT", "TEXT": "VARCHAR"}


def spelled(type_name: str, precision: int | None, scale: int | None) -> str:
    """A stored column's type as `snowflake_type` spells it, from the connector's description
    (type names as the connector's FIELD_ID_TO_NAME gives them)."""
    name = _NAMES.get(type_name, type_name)
    if name == "NUMBER":
        return f"NUMBER({precision if precision is not None else 38},{scale or 0})"
    return name


def _number(spelled_type: str) -> tuple[int, int] | None:
    if not spelled_type.startswith("NUMBER("):
        return None
    p, _, sc = spelled_type[7:-1].partition(",")
    return int(p), int(sc or 0)


def widens(have: str, wanted: str) -> bool:
    """Whether a Snowflake column typed ``have`` can become ``wanted`` keeping every value."""
    if have == wanted:
        return True
    a, b = _number(have), _number(wanted)
    return a is not None and b is not None and b[1] == a[1] and b[0] >= a[0]
