"""MariaDB/MySQL column types to logical types, and driver values to exact event values.

A column is described once, from ``information_schema`` (the snapshot, and the binlog while the
catalog still matches the table map) or from the binlog's own table-map metadata (the binlog
running behind a later ALTER). Either way the same `MyColumn` drives the same conversion, so a
snapshot row (read by PyMySQL) and a binlog row (decoded by mysql-replication) of equal content
become identical events:

| MySQL / MariaDB | logical | in the event |
|---|---|---|
| TINYINT, SMALLINT, MEDIUMINT, INT, BIGINT | int16 … int64 (one size up when UNSIGNED) | integer |
| BIGINT UNSIGNED | decimal(20,0) | string, exact up to 2^64-1 |
| DECIMAL(p,s) | decimal(p,s) | string, exact |
| FLOAT / DOUBLE | float32 / float64 | number (FLOAT as its shortest float32 text) |
| BIT(1) / BIT(n) | boolean / string | true/false / the bits, e.g. "0101010101" |
| CHAR, VARCHAR, TEXT, ENUM | string | utf8mb4 text (emoji kept) |
| SET | string | members in declared order, comma-separated |
| JSON (MariaDB: LONGTEXT CHECK json_valid) | json | the JSON text |
| BINARY, VARBINARY, BLOB, GEOMETRY | bytes | base64 |
| DATE, DATETIME(fsp) | date, timestamp | ISO text |
| TIMESTAMP(fsp) | timestamptz | ISO text in UTC, with Z |
| TIME(fsp) | interval (a duration, to ±838 h) | ``[-]HH:MM:SS[.ffffff]`` |
| YEAR | int16 | integer |

Zero dates (``'0000-00-00'``, and dates with a zero month or day) cannot be represented: by
the source's ``zero_dates`` setting they become null (Debezium's behaviour) or fail the record
(`ZeroDate`, which goes to the dead-letter topic or stops capture per ``errors.tolerance``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import numpy as np

from streaming.events import ColumnSchema
from streaming.sources.values import converter

__all__ = ["MyColumn", "ZeroDate", "column_converter", "column_schema", "from_binlog"]


class ZeroDate(ValueError):
    """A zero date under ``zero_dates: fail``."""


@dataclass(frozen=True, slots=True)
class MyColumn:
    """One column as capture needs it."""

    name: str
    data_type: str  # information_schema DATA_TYPE, lowercase
    column_type: str  # information_schema COLUMN_TYPE, e.g. "bigint(20) unsigned"
    key: bool = False
    json: bool = False
    precision: int | None = None
    scale: int | None = None

    @property
    def unsigned(self) -> bool:
        return "unsigned" in self.column_type

    @property
    def width(self) -> int:
        """BIT(n): n."""
        found = re.search(r"\((\d+)\)", self.column_type)
        return int(found.group(1)) if found else 1

    @property
    def members(self) -> list[str]:
        """SET/ENUM members in declared order."""
        inner = self.column_type[self.column_type.find("(") + 1 : self.column_type.rfind(")")]
        return [m.replace("''", "'") for m in re.findall(r"'((?:[^']|'')*)'", inner)]


_INTS = {
    "tinyint": ("int16", "int16"),
    "smallint": ("int16", "int32"),
    "mediumint": ("int32", "int32"),
    "int": ("int32", "int64"),
    "integer": ("int32", "int64"),
    "bigint": ("int64", "decimal"),
}
_TEXT = {"char", "varchar", "tinytext", "text", "mediumtext", "longtext", "enum", "set"}
# TIME is a duration in MySQL (-838:59:59 to 838:59:59), as in Debezium (MicroTime): interval.
_TIMES = {"date": "date", "datetime": "timestamp", "timestamp": "timestamptz", "time": "interval"}


def column_schema(column: MyColumn) -> ColumnSchema:
    """The column's logical type, with the source's own spelling."""
    kind = column.data_type
    logical = "bytes"
    precision = scale = None
    if kind in _INTS:
        logical = _INTS[kind][1 if column.unsigned else 0]
        if logical == "decimal":
            precision, scale = 20, 0
    elif kind in ("decimal", "numeric"):
        logical, precision, scale = "decimal", column.precision, column.scale
    elif kind in ("float", "double", "real"):
        logical = "float32" if kind == "float" else "float64"
    elif kind == "bit":
        logical = "boolean" if column.width == 1 else "string"
    elif kind == "json" or column.json:
        logical = "json"
    elif kind in _TEXT:
        logical = "string"
    elif kind in _TIMES:
        logical = _TIMES[kind]
    elif kind == "year":
        logical = "int16"
    return ColumnSchema(column.name, logical, column.column_type, column.key, precision, scale)


def _float32(value: Any) -> float:
    return float(str(np.float32(value)))


def _bits(width: int) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if isinstance(value, bytes | bytearray):
            return format(int.from_bytes(value, "big"), f"0{width}b")
        return value

    return convert


def _zero_date(column: str, policy: str) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if isinstance(value, date | datetime):
            return value
        # PyMySQL hands back text it cannot parse; the binlog decoder hands back None (see
        # `ZERO` in capture), both for '0000-00-00' and for zero months or days.
        if policy == "fail":
            raise ZeroDate(f"column {column!r} holds the zero date {value!r}")
        return None

    return convert


def column_converter(column: MyColumn, zero_dates: str) -> Callable[[Any], Any]:
    """Driver value (PyMySQL or mysql-replication) -> event value; None stays None."""
    schema = column_schema(column)
    final = converter(schema, column.members if column.data_type == "set" else None)
    if column.data_type == "float":
        return lambda v: final(_float32(v))
    if column.data_type == "bit":
        bits = _bits(column.width)
        return lambda v: final(bits(v))
    if column.data_type in ("date", "datetime", "timestamp"):
        zero = _zero_date(column.name, zero_dates)

        def convert(value: Any) -> Any:
            checked = zero(value)
            return None if checked is None else final(checked)

        return convert
    return final


# mysql-replication's FIELD_TYPE codes -> information_schema names, for table maps the
# catalog no longer describes.
_CODES = {
    1: "tinyint", 2: "smallint", 3: "int", 4: "float", 5: "double", 7: "timestamp",
    8: "bigint", 9: "mediumint", 10: "date", 11: "time", 12: "datetime", 13: "year",
    14: "date", 15: "varchar", 16: "bit", 17: "timestamp", 18: "datetime", 19: "time",
    245: "json", 246: "decimal", 247: "enum", 248: "set", 249: "blob", 250: "blob",
    251: "blob", 252: "text", 253: "varchar", 254: "char", 255: "geometry",
}  # fmt: skip


def from_binlog(column: Any) -> MyColumn:
    """A column from a binlog table map (``binlog_row_metadata=FULL``)."""
    kind = _CODES.get(column.type, "blob")
    binary = getattr(column, "character_set_name", None) == "binary"
    if binary and kind in ("text", "varchar", "char"):
        kind = {"text": "blob", "varchar": "varbinary", "char": "binary"}[kind]
    spelled = kind
    if kind == "decimal":
        spelled = f"decimal({column.precision},{column.decimals})"
    elif kind == "bit":
        spelled = f"bit({column.bits})"
    elif kind == "set":
        members = ",".join("'" + m.replace("'", "''") + "'" for m in column.set_values or [])
        spelled = f"set({members})"
    if getattr(column, "unsigned", False):
        spelled += " unsigned"
    return MyColumn(
        column.name,
        kind,
        spelled,
        bool(getattr(column, "is_primary", False)),
        False,
        getattr(column, "precision", None) if kind == "decimal" else None,
        getattr(column, "decimals", None) if kind == "decimal" else None,
    )
