"""Sluiceway's logical column types as BigQuery types, and the cast from the event encoding.

| logical | BigQuery |
|---|---|
| int16 int32 int64 | INT64 |
| float32 float64 | FLOAT64 (NaN, ±Infinity kept) |
| decimal(p, s) | NUMERIC(p, s) if p - s <= 29, s <= 9; BIGNUMERIC(p, s) if it fits; else STRING |
| decimal, unconstrained | STRING (exact text: any scale, NaN, ±Infinity) |
| boolean, string, uuid | BOOL, STRING, STRING |
| bytes | BYTES |
| date, time, timestamp, timestamptz | DATE, TIME, DATETIME, TIMESTAMP (timetz: STRING) |
| interval | STRING (ISO 8601 duration) |
| json, arrays | JSON (BigQuery arrays cannot hold NULL elements; JSON keeps them) |

Widening (`widens`): INT64 to a NUMERIC/BIGNUMERIC that holds every INT64, and a decimal to
one with at least as many integer and fraction digits; nothing else (not to FLOAT64, which
would round, nor to STRING, which BigQuery cannot do in place).

BigQuery's DATE/DATETIME/TIMESTAMP stop at year 1 and have no infinity: such values stop the
load with the table named.
"""

from __future__ import annotations

from streaming.events import ColumnSchema

__all__ = ["bigquery_type", "cast_expression", "spelled", "widens"]

_SIMPLE = {
    "int16": "INT64", "int32": "INT64", "int64": "INT64", "float32": "FLOAT64",
    "float64": "FLOAT64", "boolean": "BOOL", "string": "STRING", "uuid": "STRING",
    "bytes": "BYTES", "date": "DATE", "timestamp": "DATETIME", "timestamptz": "TIMESTAMP",
    "interval": "STRING", "json": "JSON", "array": "JSON",
}  # fmt: skip


def bigquery_type(column: ColumnSchema) -> str:
    """The BigQuery column type for a logical column."""
    if column.type == "decimal":
        p, s = column.precision, column.scale
        if p is None or s is None or s < 0:
            return "STRING"
        if p - s <= 29 and s <= 9:
            return f"NUMERIC({p}, {s})"
        if p - s <= 38 and s <= 38:
            return f"BIGNUMERIC({p}, {s})"
        return "STRING"
    if column.type == "time":
        return "STRING" if column.source_type == "timetz" else "TIME"
    return _SIMPLE.get(column.type, "STRING")


def cast_expression(column: ColumnSchema, ref: str) -> str:
    """SQL turning the staged STRING ``ref`` into the column's BigQuery value."""
    target = bigquery_type(column)
    if target == "STRING":
        return ref
    if target == "BYTES":
        return f"FROM_BASE64({ref})"
    if target == "JSON":
        return f"PARSE_JSON({ref})"
    return f"CAST({ref} AS {target.split('(')[0]})"


_LEGACY = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL"}


def spelled(field_type: str, precision: int | None, scale: int | None) -> str:
    """A stored column's type as `bigquery_type` spells it (the API says INTEGER, FLOAT)."""
    name = _LEGACY.get(field_type, field_type)
    if name in ("NUMERIC", "BIGNUMERIC") and precision is not None:
        return f"{name}({precision}, {scale or 0})"
    return name


def _digits(spelled_type: str) -> tuple[int, int] | None:
    """(integer digits, fraction digits) of a decimal type."""
    head, _, rest = spelled_type.partition("(")
    if head == "INT64":
        return 19, 0
    if head not in ("NUMERIC", "BIGNUMERIC"):
        return None
    if not rest:  # unparameterized: NUMERIC(38, 9), BIGNUMERIC(76, 38)
        return (29, 9) if head == "NUMERIC" else (38, 38)
    p, _, sc = rest.rstrip(")").partition(",")
    return int(p) - int(sc or 0), int(sc or 0)


def widens(have: str, wanted: str) -> bool:
    """Whether a BigQuery column typed ``have`` can become ``wanted`` keeping every value."""
    if have == wanted:
        return True
    a, b = _digits(have), _digits(wanted)
    if a is None or b is None or wanted == "INT64":
        return False
    return b[0] >= a[0] and b[1] >= a[1]
