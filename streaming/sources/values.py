"""Python values from a database driver to the event encoding every source shares.

PostgreSQL capture converts pgoutput's text format itself (`postgres.pgtypes`); the binlog and
query sources receive Python objects from their drivers (PyMySQL, mysql-replication,
SQLAlchemy) and convert them here, one converter per column chosen once per table shape, into
the same JSON values (see the README's "Event format"):

| logical type | in the event |
|---|---|
| int16, int32, int64 | JSON integer |
| decimal | string, exact (``format(Decimal, "f")``; unsigned BIGINT too) |
| float32, float64 | JSON number; NaN and ±Infinity as strings |
| boolean | true / false |
| string | string (a SET as its members in declared order, comma-separated) |
| bytes | base64 string |
| date / time | ``YYYY-MM-DD`` / ``HH:MM:SS[.ffffff]`` |
| interval | a timedelta as ``[-]HH:MM:SS[.ffffff]`` (MySQL TIME, up to ±838 h) |
| timestamp | ``YYYY-MM-DDTHH:MM:SS[.ffffff]`` |
| timestamptz | the same in UTC, with ``Z`` |
| json | string holding the JSON text |

`connect_schema` builds the Kafka Connect JsonConverter schema of any table shape from its
logical types, for sources without a catalog of their own.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import orjson

from streaming.events import ColumnSchema, ConnectSchema, Field, TableSchema

__all__ = ["Converter", "connect_field", "connect_schema", "converter"]

Converter = Callable[[Any], Any]


def _int(value: Any) -> int:
    return int(value)


def _decimal(value: Any) -> str:
    if isinstance(value, Decimal):
        text = format(value, "f")
        return text
    if isinstance(value, int):
        return str(value)
    return format(Decimal(str(value)), "f")


def _float(value: Any) -> float | str:
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    return number


def _bool(value: Any) -> bool:
    if isinstance(value, str):  # BIT(1) arrives as '0' / '1'
        return value == "1"
    if isinstance(value, bytes):
        return value not in (b"", b"\x00")
    return bool(value)


def _string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def _bytes(value: Any) -> str:
    if isinstance(value, str):
        value = value.encode("utf-8")
    return base64.b64encode(bytes(value)).decode()


def _date(value: Any) -> str:
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _time(value: Any) -> str:
    if isinstance(value, timedelta):
        micros = value.days * 86_400_000_000 + value.seconds * 1_000_000 + value.microseconds
        sign = "-" if micros < 0 else ""
        micros = abs(micros)
        seconds, fraction = divmod(micros, 1_000_000)
        hours, rest = divmod(seconds, 3600)
        minutes, seconds = divmod(rest, 60)
        text = f"{sign}{hours:02d}:{minutes:02d}:{seconds:02d}"
        return f"{text}.{fraction:06d}" if fraction else text
    if isinstance(value, time):
        return value.isoformat()
    return str(value)


def _interval(value: Any) -> str:
    return _time(value) if isinstance(value, timedelta) else _string(value)


def _timestamp(value: Any) -> str:
    if isinstance(value, datetime):
        return value.replace(tzinfo=None).isoformat() if value.tzinfo is None else _utc(value)
    return str(value).replace(" ", "T", 1)


def _utc(value: datetime) -> str:
    return value.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


def _timestamptz(value: Any) -> str:
    # Naive values are UTC here: mysql-replication decodes TIMESTAMP with utcfromtimestamp and
    # snapshot sessions run with time_zone '+00:00'.
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.isoformat() + "Z"
        return _utc(value)
    return str(value).replace(" ", "T", 1)


def _json(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return orjson.dumps(value, default=_json_default).decode()


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _set(members: list[str]) -> Converter:
    order = {m: i for i, m in enumerate(members)}

    def convert(value: Any) -> str:
        if isinstance(value, set | frozenset | list | tuple):
            return ",".join(sorted(value, key=lambda m: order.get(m, len(order))))
        return _string(value)

    return convert


_BY_LOGICAL: dict[str, Converter] = {
    "int16": _int,
    "int32": _int,
    "int64": _int,
    "decimal": _decimal,
    "float32": _float,
    "float64": _float,
    "boolean": _bool,
    "string": _string,
    "bytes": _bytes,
    "date": _date,
    "time": _time,
    "timestamp": _timestamp,
    "timestamptz": _timestamptz,
    "json": _json,
    "uuid": _string,
    "interval": _interval,
}


def converter(column: ColumnSchema, set_members: list[str] | None = None) -> Converter:
    """The converter of one column (by its logical type)."""
    if set_members:
        return _set(set_members)
    return _BY_LOGICAL.get(column.type, _string)


_CONNECT: dict[str, tuple[str, str | None]] = {
    "int16": ("int16", None),
    "int32": ("int32", None),
    "int64": ("int64", None),
    "float32": ("float32", None),
    "float64": ("float64", None),
    "boolean": ("boolean", None),
    "bytes": ("bytes", None),
    "decimal": ("string", None),
    "json": ("string", "io.debezium.data.Json"),
    "uuid": ("string", "io.debezium.data.Uuid"),
    "date": ("string", "io.debezium.time.IsoDate"),
    "time": ("string", "io.debezium.time.IsoTime"),
    "timestamp": ("string", "io.debezium.time.IsoTimestamp"),
    "timestamptz": ("string", "io.debezium.time.ZonedTimestamp"),
    "interval": ("string", "io.debezium.time.Interval"),
}


def connect_field(column: ColumnSchema) -> Field:
    """The Kafka Connect field of a column, from its logical type."""
    if column.type == "array":
        item = ColumnSchema("item", column.items or "string", column.items or "text")
        return Field(column.name, "array", True, None, connect_field(item))
    kind, semantic = _CONNECT.get(column.type, ("string", None))
    return Field(column.name, kind, True, semantic)


def connect_schema(server: str, table: TableSchema) -> ConnectSchema:
    """The JsonConverter schema of a table shape."""
    return ConnectSchema(
        server, table.schema, table.table, [connect_field(c) for c in table.columns]
    )
