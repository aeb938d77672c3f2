"""A decoder for PostgreSQL's pgoutput logical replication protocol (version 1).

Written by hand because no maintained Python library decodes pgoutput (psycopg2 delivers the
raw bytes; psycopg 3 has no replication API at all). It follows the PostgreSQL documentation,
"Logical Replication Message Formats": Begin, Commit, Origin, Relation, Type, Insert, Update,
Delete, Truncate and logical decoding Message (sent with the ``messages`` option).

Column values stay in PostgreSQL's text format (as `str`), or `UNCHANGED_TOAST` for a TOASTed
value an UPDATE did not touch, or None for NULL; `streaming.sources.postgres.pgtypes` turns
text into typed values, so the same conversion serves pgoutput and ``COPY ... TO STDOUT``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

__all__ = [
    "UNCHANGED_TOAST",
    "Begin",
    "Column",
    "Commit",
    "Delete",
    "Insert",
    "LogicalMessage",
    "Origin",
    "PgOutputError",
    "Relation",
    "Truncate",
    "TypeInfo",
    "Update",
    "decode",
    "format_lsn",
    "parse_lsn",
    "row_values",
]


class _Unchanged:
    """The marker for a TOASTed column an UPDATE left unchanged (pgoutput kind 'u')."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNCHANGED_TOAST"


UNCHANGED_TOAST: Final = _Unchanged()

Value = str | bytes | None | _Unchanged


class PgOutputError(ValueError):
    """A message that does not follow the protocol."""


@dataclass(frozen=True, slots=True)
class Begin:
    final_lsn: int
    commit_ts_us: int  # microseconds since 2000-01-01 UTC
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_ts_us: int


@dataclass(frozen=True, slots=True)
class Origin:
    lsn: int
    name: str


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type_oid: int
    type_modifier: int
    key: bool


@dataclass(frozen=True, slots=True)
class Relation:
    oid: int
    namespace: str
    name: str
    replica_identity: str  # 'd' default, 'n' nothing, 'f' full, 'i' index
    columns: tuple[Column, ...]


@dataclass(frozen=True, slots=True)
class TypeInfo:
    oid: int
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class Insert:
    relation_oid: int
    new: list[Value]


@dataclass(frozen=True, slots=True)
class Update:
    relation_oid: int
    old_kind: str | None  # 'K' key columns only, 'O' the whole old row, None: not sent
    old: list[Value] | None
    new: list[Value]


@dataclass(frozen=True, slots=True)
class Delete:
    relation_oid: int
    old_kind: str
    old: list[Value]


@dataclass(frozen=True, slots=True)
class Truncate:
    relation_oids: tuple[int, ...]
    cascade: bool
    restart_identity: bool


@dataclass(frozen=True, slots=True)
class LogicalMessage:
    transactional: bool
    lsn: int
    prefix: str
    content: bytes


Message = (
    Begin | Commit | Origin | Relation | TypeInfo | Insert | Update | Delete | Truncate
    | LogicalMessage
)  # fmt: skip

_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_I16_unpack = _I16.unpack_from
_I32_unpack = _I32.unpack_from
_U32 = struct.Struct("!I")
_BEGIN = struct.Struct("!QqI")
_COMMIT = struct.Struct("!BQQq")
_REL_HEAD = struct.Struct("!I")
_COL_TAIL = struct.Struct("!Ii")


def parse_lsn(text: str) -> int:
    """'16/B374D848' -> an integer LSN."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


def format_lsn(lsn: int) -> str:
    """An integer LSN -> PostgreSQL's 'X/Y' form."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def _cstring(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.index(b"\0", pos)
    return buf[pos:end].decode(), end + 1


def _tuple(buf: bytes, pos: int) -> tuple[list[Value], int]:
    # The hottest loop of capture: locals only, the common text kind tested first.
    (count,) = _I16_unpack(buf, pos)
    pos += 2
    values: list[Value] = []
    append = values.append
    unpack = _I32_unpack
    for _ in range(count):
        kind = buf[pos]
        if kind == 0x74:  # 't' text
            (length,) = unpack(buf, pos + 1)
            pos += 5
            append(buf[pos : pos + length].decode())
            pos += length
        elif kind == 0x6E:  # 'n' null
            append(None)
            pos += 1
        elif kind == 0x75:  # 'u' unchanged TOAST
            append(UNCHANGED_TOAST)
            pos += 1
        elif kind == 0x62:  # 'b' binary (only with the binary option)
            (length,) = unpack(buf, pos + 1)
            pos += 5
            append(bytes(buf[pos : pos + length]))
            pos += length
        else:
            raise PgOutputError(f"unknown tuple value kind {chr(kind)!r} at byte {pos}")
    return values, pos


def _relation(buf: bytes) -> Relation:
    (oid,) = _REL_HEAD.unpack_from(buf, 1)
    namespace, pos = _cstring(buf, 5)
    name, pos = _cstring(buf, pos)
    identity = chr(buf[pos])
    (count,) = _I16.unpack_from(buf, pos + 1)
    pos += 3
    columns = []
    for _ in range(count):
        flags = buf[pos]
        column, pos = _cstring(buf, pos + 1)
        type_oid, modifier = _COL_TAIL.unpack_from(buf, pos)
        pos += 8
        columns.append(Column(column, type_oid, modifier, bool(flags & 1)))
    return Relation(oid, namespace, name, identity, tuple(columns))


def _update_parts(buf: bytes, oid: int) -> tuple[str | None, list[Value] | None, list[Value]]:
    """(old kind, old tuple, new tuple) of an Update message."""
    pos = 5
    kind = buf[pos]
    old: list[Value] | None = None
    old_kind: str | None = None
    if kind == 0x4B or kind == 0x4F:  # 'K' key columns, 'O' the whole old row
        old_kind = chr(kind)
        old, pos = _tuple(buf, pos + 1)
        kind = buf[pos]
    if kind != 0x4E:
        raise PgOutputError(f"update of relation {oid}: expected 'N', got {chr(kind)!r}")
    return old_kind, old, _tuple(buf, pos + 1)[0]


def _update(buf: bytes) -> Update:
    (oid,) = _U32.unpack_from(buf, 1)
    return Update(oid, *_update_parts(buf, oid))


def row_values(payload: bytes) -> tuple[str, int, list[Value] | None, list[Value] | None]:
    """The fast path for row messages: (op, relation oid, old values, new values).

    op is 'c' (Insert), 'u' (Update) or 'd' (Delete); old values are None unless PostgreSQL
    sent an old tuple, new values None for a Delete. Capture calls this for 'I', 'U' and 'D'
    messages instead of `decode`, skipping the message objects.
    """
    tag = payload[0]
    try:
        (oid,) = _U32.unpack_from(payload, 1)
        if tag == 0x49:
            return "c", oid, None, _tuple(payload, 6)[0]
        if tag == 0x44:
            return "d", oid, _tuple(payload, 6)[0], None
        _kind, old, new = _update_parts(payload, oid)
        return "u", oid, old, new
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise PgOutputError(f"malformed {chr(tag)!r} message: {exc}") from exc


def decode(payload: bytes) -> Message:
    """Decode one pgoutput message.

    Raises:
        PgOutputError: on an unknown message type or a malformed message.
    """
    if not payload:
        raise PgOutputError("empty message")
    tag = payload[0]
    try:
        if tag == 0x49:  # 'I'
            (oid,) = _U32.unpack_from(payload, 1)
            if payload[5] != 0x4E:
                raise PgOutputError(f"insert into relation {oid}: expected 'N'")
            return Insert(oid, _tuple(payload, 6)[0])
        if tag == 0x55:  # 'U'
            return _update(payload)
        if tag == 0x44:  # 'D'
            (oid,) = _U32.unpack_from(payload, 1)
            return Delete(oid, chr(payload[5]), _tuple(payload, 6)[0])
        if tag == 0x42:  # 'B'
            return Begin(*_BEGIN.unpack_from(payload, 1))
        if tag == 0x43:  # 'C'
            return Commit(*_COMMIT.unpack_from(payload, 1))
        if tag == 0x52:  # 'R'
            return _relation(payload)
        if tag == 0x54:  # 'T'
            (count,) = _I32.unpack_from(payload, 1)
            options = payload[5]
            oids = struct.unpack_from(f"!{count}I", payload, 6)
            return Truncate(tuple(oids), bool(options & 1), bool(options & 2))
        if tag == 0x4D:  # 'M'
            flags = payload[1]
            (lsn,) = struct.unpack_from("!Q", payload, 2)
            prefix, pos = _cstring(payload, 10)
            (length,) = _I32.unpack_from(payload, pos)
            return LogicalMessage(bool(flags & 1), lsn, prefix, payload[pos + 4 : pos + 4 + length])
        if tag == 0x59:  # 'Y'
            (oid,) = _U32.unpack_from(payload, 1)
            namespace, pos = _cstring(payload, 5)
            name, _ = _cstring(payload, pos)
            return TypeInfo(oid, namespace, name)
        if tag == 0x4F:  # 'O'
            (lsn,) = struct.unpack_from("!Q", payload, 1)
            return Origin(lsn, _cstring(payload, 9)[0])
    except (struct.error, IndexError, ValueError) as exc:
        if isinstance(exc, PgOutputError):
            raise
        raise PgOutputError(f"malformed {chr(tag)!r} message: {exc}") from exc
    raise PgOutputError(f"unknown pgoutput message type {chr(tag)!r}")
