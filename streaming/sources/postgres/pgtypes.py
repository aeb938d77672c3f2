"""PostgreSQL text-format values to exact, JSON-ready values, by type OID.

Both pgoutput and ``COPY ... TO STDOUT`` deliver values in PostgreSQL's text format; the
session settings in `SESSION_SETTINGS` pin that format (UTC, ISO dates, ISO 8601 intervals,
shortest exact floats), so the conversion here is string work, never a round trip through a
lossy type. The encoding (documented in the README, "Event format"):

| PostgreSQL | in the event |
|---|---|
| smallint, integer, bigint, oid | JSON integer |
| numeric, decimal (any scale, NaN, ±Infinity) | string, exactly as PostgreSQL prints it |
| real, double precision | JSON number; "NaN", "Infinity", "-Infinity" as strings |
| boolean | true / false |
| text, varchar, char, name, uuid, enum, inet, money, xml, bit, ... | string |
| bytea | base64 string |
| date | "YYYY-MM-DD" ("-YYYY-MM-DD" before year 1; "infinity" kept) |
| timestamp | "YYYY-MM-DDTHH:MM:SS[.ffffff]" |
| timestamptz | "YYYY-MM-DDTHH:MM:SS[.ffffff]Z" (UTC) |
| time, timetz | "HH:MM:SS[.ffffff][+HH[:MM]]" |
| interval | ISO 8601 duration, e.g. "P1Y2M3DT4H5M6.5S" |
| json, jsonb | string holding the JSON text (exact; parse it downstream) |
| arrays | JSON arrays (nested for multi-dimensional) of the element encoding |
| domains | the encoding of the base type |
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "JSON_IN_SERVER",
    "SESSION_SETTINGS",
    "Converter",
    "PgType",
    "TypeRegistry",
    "parse_array",
]

Converter = Callable[[str], Any]

# GUCs every capture and snapshot session sets, so text output is stable and exact.
SESSION_SETTINGS = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "iso_8601",
    "extra_float_digits": "3",
    "bytea_output": "hex",
    "client_encoding": "UTF8",
    # A database fenced for a migration (default_transaction_read_only) still lets capture
    # write its heartbeats.
    "default_transaction_read_only": "off",
}

_SPECIAL_FLOATS = frozenset({"NaN", "Infinity", "-Infinity"})


def _float(text: str) -> float | str:
    return text if text in _SPECIAL_FLOATS else float(text)


def _bool(text: str) -> bool:
    return text == "t"


def _bytea(text: str) -> str:
    return base64.b64encode(bytes.fromhex(text[2:])).decode()


def _bc(text: str) -> str:
    # '0044-03-15 BC' -> astronomical year numbering (ISO 8601): 1 BC is year 0000, 44 BC -0043.
    year, rest = text[:-3].split("-", 1)
    astronomical = int(year) - 1
    return f"-{astronomical:04d}-{rest}" if astronomical else f"0000-{rest}"


def _date(text: str) -> str:
    return _bc(text) if text.endswith(" BC") else text


def _timestamp(text: str) -> str:
    if text.endswith(" BC"):
        text = _bc(text)
    return text.replace(" ", "T", 1)


def _timestamptz(text: str) -> str:
    # With TimeZone=UTC the offset is always '+00'.
    if text.endswith(" BC"):
        text = _bc(text)
    if text.endswith("+00"):
        text = text[:-3] + "Z"
    return text.replace(" ", "T", 1)


def _identity(text: str) -> str:
    return text


_BY_NAME: dict[str, Converter] = {
    "int2": int,
    "int4": int,
    "int8": int,
    "oid": int,
    "xid": int,
    "float4": _float,
    "float8": _float,
    "bool": _bool,
    "bytea": _bytea,
    "date": _date,
    "timestamp": _timestamp,
    "timestamptz": _timestamptz,
}


# The same encodings written as SQL, for the snapshot to let PostgreSQL encode rows itself
# (``row_to_json`` in the server processes, not per-value work in Python). Each template turns
# the column ``{c}`` into a value whose JSON is byte for byte what the converter above gives;
# types not listed here (floats, bytea, arrays, time, interval, char(n), ...) keep the Python
# path. BC dates follow `_bc` (astronomical years); an exact match is tested per edge value.
_BC_SQL = (
    "(CASE WHEN split_part(left({t}, -3), '-', 1)::int = 1 THEN '0000' "
    "ELSE '-' || lpad((split_part(left({t}, -3), '-', 1)::int - 1)::text, 4, '0') END"
    " || substr(left({t}, -3), strpos({t}, '-')))"
)
_DATE_SQL = "(CASE WHEN {t} LIKE '%% BC' THEN " + _BC_SQL + " ELSE {t} END)"
_AS_TEXT = "{c}::text"
JSON_IN_SERVER: dict[str, str] = {
    "int2": "{c}",
    "int4": "{c}",
    "int8": "{c}",
    "bool": "{c}",
    "text": _AS_TEXT,
    "varchar": _AS_TEXT,
    "name": _AS_TEXT,
    "numeric": _AS_TEXT,
    "uuid": _AS_TEXT,
    "json": _AS_TEXT,
    "jsonb": _AS_TEXT,
    "date": _DATE_SQL.replace("{t}", "{c}::text"),
    "timestamp": "regexp_replace(" + _DATE_SQL.replace("{t}", "{c}::text") + ", ' ', 'T')",
    "timestamptz": (
        "regexp_replace(regexp_replace("
        + _DATE_SQL.replace("{t}", "{c}::text")
        + ", '\\+00$', 'Z'), ' ', 'T')"
    ),
}


@dataclass(frozen=True, slots=True)
class PgType:
    """A row of pg_type, as much as conversion needs."""

    oid: int
    name: str
    kind: str  # typtype: b base, d domain, e enum, c composite, r range, m multirange, p pseudo
    category: str  # typcategory: A array, N numeric, S string, ...
    element: int  # typelem (arrays)
    base: int  # typbasetype (domains)
    delimiter: str


class TypeRegistry:
    """Converters by type OID, resolved through pg_type (domains to base, arrays to elements).

    ``lookup`` fetches pg_type rows for OIDs it has not seen (a type created after capture
    began); it runs a query on a regular connection, never on the replication connection.
    """

    def __init__(self, lookup: Callable[[list[int]], list[PgType]]) -> None:
        self._lookup = lookup
        self._types: dict[int, PgType] = {}
        self._converters: dict[int, Converter] = {}

    def load(self, types: list[PgType]) -> None:
        """Add known pg_type rows (e.g. all of pg_type at start)."""
        for pg_type in types:
            self._types[pg_type.oid] = pg_type

    def _type(self, oid: int) -> PgType | None:
        if oid not in self._types:
            self.load(self._lookup([oid]))
        return self._types.get(oid)

    def name(self, oid: int) -> str:
        """The type's name (e.g. 'int4', '_text', 'mood'); 'unknown' if it has none."""
        pg_type = self._type(oid)
        return pg_type.name if pg_type else "unknown"

    def base(self, oid: int) -> PgType | None:
        """The type with domains resolved to their base type."""
        pg_type = self._type(oid)
        seen = 0
        while pg_type is not None and pg_type.kind == "d" and seen < 32:
            pg_type = self._type(pg_type.base)
            seen += 1
        return pg_type

    def converter(self, oid: int) -> Converter:
        """The text-to-value function for a column of type ``oid``."""
        found = self._converters.get(oid)
        if found is None:
            found = self._converters[oid] = self._build(oid)
        return found

    def json_in_server(self, oid: int) -> str | None:
        """The `JSON_IN_SERVER` template for a column of type ``oid`` (domains resolved; enums
        are text), or None when only the Python converter encodes it exactly."""
        pg_type = self.base(oid)
        if pg_type is None:
            return None
        if pg_type.kind == "e":
            return _AS_TEXT
        return JSON_IN_SERVER.get(pg_type.name) if pg_type.kind == "b" else None

    def _build(self, oid: int) -> Converter:
        pg_type = self.base(oid)
        if pg_type is None:
            return _identity
        if pg_type.category == "A" and pg_type.element:
            element = self.converter(pg_type.element)
            delimiter = pg_type.delimiter or ","
            elem_type = self.base(pg_type.element)
            if elem_type is not None and elem_type.delimiter:
                delimiter = elem_type.delimiter
            return lambda text: parse_array(text, element, delimiter)
        return _BY_NAME.get(pg_type.name, _identity)


def parse_array(text: str, element: Converter, delimiter: str = ",") -> list[Any]:
    """Parse a PostgreSQL array literal ('{1,2,NULL}', '{{"a b",c}}', '[0:1]={1,2}')."""
    if text.startswith("["):  # explicit bounds decoration: '[1:2][1:3]={...}'
        text = text[text.index("=") + 1 :]
    value, pos = _array(text, 0, element, delimiter)
    if pos != len(text):
        raise ValueError(f"trailing characters in array literal at {pos}: {text!r}")
    return value


def _array(text: str, pos: int, element: Converter, delimiter: str) -> tuple[list[Any], int]:
    if text[pos] != "{":
        raise ValueError(f"array literal must start with '{{' at {pos}: {text!r}")
    pos += 1
    items: list[Any] = []
    if text[pos] == "}":
        return items, pos + 1
    while True:
        char = text[pos]
        if char == "{":
            sub, pos = _array(text, pos, element, delimiter)
            items.append(sub)
        elif char == '"':
            pos += 1
            chunks = []
            while text[pos] != '"':
                if text[pos] == "\\":
                    pos += 1
                chunks.append(text[pos])
                pos += 1
            pos += 1
            items.append(element("".join(chunks)))
        else:
            end = pos
            while text[end] != delimiter and text[end] != "}":
                end += 1
            raw = text[pos:end].strip()
            items.append(None if raw == "NULL" else element(raw))
            pos = end
        if text[pos] == delimiter:
            pos += 1
            continue
        if text[pos] == "}":
            return items, pos + 1
        raise ValueError(f"unexpected {text[pos]!r} at {pos} in array literal {text!r}")
