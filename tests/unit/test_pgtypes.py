"""Text-format conversion: arrays, dates before year 1, COPY lines, domains."""

from __future__ import annotations

import pytest

from streaming.sources.postgres.pgtypes import PgType, TypeRegistry, parse_array
from streaming.sources.postgres.snapshot import parse_copy_line

TYPES = [
    PgType(23, "int4", "b", "N", 0, 0, ","),
    PgType(1007, "_int4", "b", "A", 23, 0, ","),
    PgType(25, "text", "b", "S", 0, 0, ","),
    PgType(1009, "_text", "b", "A", 25, 0, ","),
    PgType(1082, "date", "b", "D", 0, 0, ","),
    PgType(1184, "timestamptz", "b", "D", 0, 0, ","),
    PgType(700, "float4", "b", "N", 0, 0, ","),
    PgType(17, "bytea", "b", "U", 0, 0, ","),
    PgType(9000, "posint", "d", "N", 0, 23, ","),
    PgType(9001, "_posint", "b", "A", 9000, 0, ","),
]


@pytest.fixture
def types() -> TypeRegistry:
    registry = TypeRegistry(lambda oids: [])
    registry.load(TYPES)
    return registry


def test_arrays(types: TypeRegistry) -> None:
    assert types.converter(1007)("{1,NULL,-3}") == [1, None, -3]
    assert types.converter(1007)("{{1,2},{3,4}}") == [[1, 2], [3, 4]]
    assert types.converter(1007)("[0:1]={5,6}") == [5, 6]
    assert types.converter(1009)('{"a b","c,d","NULL",NULL,"\\"q\\"",""}') == [
        "a b", "c,d", "NULL", None, '"q"', ""
    ]  # fmt: skip
    assert types.converter(1009)("{}") == []
    assert types.converter(9001)("{7}") == [7]  # array of a domain: the base type's encoding
    with pytest.raises(ValueError, match="array literal"):
        parse_array("1,2", int)


def test_domain_dates_and_specials(types: TypeRegistry) -> None:
    assert types.converter(9000)("5") == 5
    assert types.converter(1082)("0044-03-15 BC") == "-0043-03-15"
    assert types.converter(1082)("0001-01-01 BC") == "0000-01-01"
    assert types.converter(1082)("infinity") == "infinity"
    assert types.converter(1184)("2024-02-29 18:29:59.999999+00") == "2024-02-29T18:29:59.999999Z"
    assert types.converter(700)("NaN") == "NaN"
    assert types.converter(700)("-Infinity") == "-Infinity"
    assert types.converter(700)("1.5") == 1.5
    assert types.converter(17)("\\x00ff") == "AP8="
    assert types.converter(12345)("unknown type stays text") == "unknown type stays text"


def test_copy_lines_unescape() -> None:
    assert parse_copy_line("1\t\\N\ta\\tb\\nc\\\\d\t") == ["1", None, "a\tb\nc\\d", ""]
    assert parse_copy_line("\\101") == ["A"]
