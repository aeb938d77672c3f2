"""Driver values to event values: the encoding binlog and query capture share."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from streaming.events import ColumnSchema
from streaming.sources.mysql.capture import BinlogPosition, encode_position
from streaming.sources.mysql.types import MyColumn, ZeroDate, column_converter, column_schema
from streaming.sources.values import converter


def convert(logical: str, value: object) -> object:
    return converter(ColumnSchema("c", logical, logical))(value)


def test_exact_encodings() -> None:
    assert convert("decimal", Decimal("1E+3")) == "1000"
    assert convert("decimal", 18446744073709551615) == "18446744073709551615"
    assert convert("float64", float("nan")) == "NaN"
    assert convert("bytes", b"\x00\xff") == "AP8="
    assert convert("time", timedelta(hours=-838, minutes=-59, seconds=-59)) == "-838:59:59"
    assert convert("time", timedelta(seconds=1, microseconds=5)) == "00:00:01.000005"
    assert convert("time", time(1, 2, 3)) == "01:02:03"
    assert convert("timestamp", datetime(2026, 1, 2, 3, 4, 5, 6)) == "2026-01-02T03:04:05.000006"
    assert convert("timestamptz", datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05Z"
    aware = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert convert("timestamptz", aware) == "2026-01-02T03:04:05Z"
    assert convert("date", date(1000, 1, 1)) == "1000-01-01"
    assert convert("json", {"a": [1]}) == '{"a":[1]}'


def test_mysql_types_map_exactly() -> None:
    def schema(kind: str, spelled: str, **extra: object) -> tuple[str, int | None]:
        found = column_schema(MyColumn("c", kind, spelled, **extra))  # type: ignore[arg-type]
        return found.type, found.precision

    assert schema("bigint", "bigint(20) unsigned") == ("decimal", 20)
    assert schema("int", "int(10) unsigned") == ("int64", None)
    assert schema("smallint", "smallint(5) unsigned") == ("int32", None)
    assert schema("tinyint", "tinyint(3) unsigned") == ("int16", None)
    assert schema("bit", "bit(1)") == ("boolean", None)
    assert schema("bit", "bit(10)") == ("string", None)
    assert schema("longtext", "longtext", json=True) == ("json", None)
    assert schema("timestamp", "timestamp(6)") == ("timestamptz", None)
    assert schema("decimal", "decimal(65,30)", precision=65, scale=30) == ("decimal", 65)


def test_snapshot_and_binlog_values_convert_alike() -> None:
    bits = column_converter(MyColumn("b", "bit", "bit(10)"), "null")
    assert bits(b"\x02\x01") == bits("1000000001") == "1000000001"
    members = column_converter(MyColumn("s", "set", "set('red','green','blue')"), "null")
    assert members({"blue", "red"}) == members("red,blue") == "red,blue"
    floats = column_converter(MyColumn("f", "float", "float"), "null")
    assert floats(0.10000000149011612) == floats(0.1) == 0.1


def test_zero_dates_by_policy() -> None:
    day = MyColumn("day", "date", "date")
    assert column_converter(day, "null")("0000-00-00") is None
    try:
        column_converter(day, "fail")("0000-00-00")
    except ZeroDate as exc:
        assert "'day'" in str(exc)
    else:
        raise AssertionError("a zero date passed under zero_dates: fail")


def test_binlog_positions_compare_across_files() -> None:
    assert encode_position("bin.000002", 4) > encode_position("bin.000001", 2**31)
    saved = BinlogPosition("mariadb-bin.000016", 4, True, 9)
    moved = saved.at(encode_position("mariadb-bin.000017", 1234))
    assert (moved.file, moved.pos, moved.server_id) == ("mariadb-bin.000017", 1234, 9)
