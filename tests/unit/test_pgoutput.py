"""The pgoutput decoder on hand-built protocol messages (real server bytes: integration)."""

from __future__ import annotations

import struct

import pytest

from streaming.sources.postgres import pgoutput as pg


def _tuple(*values: str | object | None) -> bytes:
    out = struct.pack("!h", len(values))
    for value in values:
        if value is None:
            out += b"n"
        elif value is pg.UNCHANGED_TOAST:
            out += b"u"
        else:
            raw = str(value).encode()
            out += b"t" + struct.pack("!i", len(raw)) + raw
    return out


def test_begin_commit_and_lsn_text() -> None:
    begin = pg.decode(b"B" + struct.pack("!QqI", 0x16B374D848, 123, 7))
    assert begin == pg.Begin(0x16B374D848, 123, 7)
    assert pg.format_lsn(0x16B374D848) == "16/B374D848"
    assert pg.parse_lsn("16/B374D848") == 0x16B374D848
    commit = pg.decode(b"C" + struct.pack("!BQQq", 0, 10, 20, 30))
    assert commit == pg.Commit(0, 10, 20, 30)


def test_relation_with_quoted_names() -> None:
    body = struct.pack("!I", 42) + b'My Schema\0Mixed "Case"\0' + b"d" + struct.pack("!h", 2)
    body += (
        b"\x01ID\0" + struct.pack("!Ii", 23, -1) + b"\x00with space\0" + struct.pack("!Ii", 25, -1)
    )
    relation = pg.decode(b"R" + body)
    assert relation == pg.Relation(
        42,
        "My Schema",
        'Mixed "Case"',
        "d",
        (pg.Column("ID", 23, -1, True), pg.Column("with space", 25, -1, False)),
    )


def test_rows_null_unchanged_and_unicode() -> None:
    insert = b"I" + struct.pack("!I", 42) + b"N" + _tuple("1", None, "ünï 🎉")
    assert pg.decode(insert) == pg.Insert(42, ["1", None, "ünï 🎉"])
    assert pg.row_values(insert) == ("c", 42, None, ["1", None, "ünï 🎉"])

    update = b"U" + struct.pack("!I", 42) + b"K" + _tuple("1", None) + b"N"
    update += _tuple("2", pg.UNCHANGED_TOAST)
    decoded = pg.decode(update)
    assert isinstance(decoded, pg.Update)
    assert decoded.old_kind == "K" and decoded.old == ["1", None]
    assert decoded.new == ["2", pg.UNCHANGED_TOAST]
    assert pg.row_values(b"U" + struct.pack("!I", 42) + b"N" + _tuple("3"))[:3] == ("u", 42, None)

    delete = b"D" + struct.pack("!I", 42) + b"O" + _tuple("1", "x")
    assert pg.decode(delete) == pg.Delete(42, "O", ["1", "x"])
    assert pg.row_values(delete) == ("d", 42, ["1", "x"], None)


def test_truncate_message_and_type() -> None:
    truncate = pg.decode(b"T" + struct.pack("!iB", 2, 3) + struct.pack("!II", 5, 6))
    assert truncate == pg.Truncate((5, 6), cascade=True, restart_identity=True)
    message = pg.decode(
        b"M\x01" + struct.pack("!Q", 99) + b"sluiceway.heartbeat\0" + struct.pack("!i", 2) + b"hi"
    )
    assert message == pg.LogicalMessage(True, 99, "sluiceway.heartbeat", b"hi")
    assert pg.decode(b"Y" + struct.pack("!I", 7) + b"public\0mood\0") == pg.TypeInfo(
        7, "public", "mood"
    )


@pytest.mark.parametrize(
    "payload",
    [b"", b"Z", b"I" + struct.pack("!I", 1) + b"N" + struct.pack("!h", 1) + b"x", b"B\x00"],
)
def test_malformed_messages_raise_a_clear_error(payload: bytes) -> None:
    with pytest.raises(pg.PgOutputError):
        pg.decode(payload)


def test_the_row_fast_path_validates_like_decode() -> None:
    broken = b"U" + struct.pack("!I", 42) + b"X" + _tuple("1")
    for parse in (pg.decode, pg.row_values):
        with pytest.raises(pg.PgOutputError, match="expected 'N'"):
            parse(broken)
    with pytest.raises(pg.PgOutputError, match="malformed 'I'"):
        pg.row_values(b"I" + struct.pack("!I", 42) + b"N" + struct.pack("!h", 1) + b"t")
