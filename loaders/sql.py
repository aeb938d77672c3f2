"""The set-based statements SQL targets share to apply a batch of changes.

Every SQL target stages a batch as text (the event encoding is exact text), then runs the same
statements, differing only by dialect: how a type is spelled, how a staged string is cast, how
list membership is written and how a temporary table is made.

Current state, for the newest change of each key in the batch (`latest_per_key`):

1. ``applied`` — staged changes newer, by ``(commit_lsn, lsn)``, than the stored row and than
   the delete guard of their key (an older change never overwrites a newer one);
2. ``upserts`` — the new rows of applied inserts and updates, a TOAST-unchanged column taking
   the stored value;
3. delete the applied keys from the table and the guard, insert ``upserts``, and record applied
   deletes in the guard (so an old insert replayed later cannot bring the row back).

History: every staged change inserted once per (topic, partition, offset).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from loaders.base import POSITION
from loaders.changes import Change
from sluiceway.errors import SinkFatal
from streaming.events import ColumnSchema

__all__ = [
    "HISTORY_COLUMNS",
    "Dialect",
    "current_state",
    "evolve",
    "fits",
    "history",
    "q",
    "split_ddl",
    "staged_values",
    "widens",
]

HISTORY_COLUMNS = [
    ("_sluiceway_op", "text"),
    (POSITION[0], "bigint"),
    (POSITION[1], "bigint"),
    ("_sluiceway_ts_ms", "bigint"),
    ("_sluiceway_topic", "text"),
    ("_sluiceway_partition", "integer"),
    ("_sluiceway_offset", "bigint"),
    ("_sluiceway_unchanged", "text[]"),  # TOAST-unchanged columns: their value here is NULL
]


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return orjson.dumps(value).decode()
    return str(value)


def staged_values(columns: list[ColumnSchema], changes: list[Change]) -> dict[str, list[Any]]:
    """The staging columns of a batch: each column as text, then the change's metadata
    (``__op``, ``__commit_lsn``, ``__lsn``, ``__unchanged``, ``__partition``, ``__offset``,
    ``__ts_ms``)."""
    data: dict[str, list[Any]] = {c.name: [] for c in columns}
    meta: dict[str, list[Any]] = {
        "__op": [], "__commit_lsn": [], "__lsn": [], "__unchanged": [],
        "__partition": [], "__offset": [], "__ts_ms": [],
    }  # fmt: skip
    for change in changes:
        row = change.row or {}
        unchanged = change.unchanged
        for column in columns:
            # An unchanged TOAST value is unknown here: staged as NULL (the placeholder text
            # would not even cast to bytea or json), and `__unchanged` says so.
            if unchanged and column.name in unchanged:
                data[column.name].append(None)
            else:
                data[column.name].append(_text(row.get(column.name)))
        meta["__op"].append(change.op)
        meta["__commit_lsn"].append(change.position[0])
        meta["__lsn"].append(change.position[1])
        meta["__unchanged"].append(change.unchanged)
        meta["__partition"].append(change.partition)
        meta["__offset"].append(change.offset)
        meta["__ts_ms"].append(change.ts_ms)
    return {**data, **meta}


def q(name: str) -> str:
    """A quoted identifier."""
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class Dialect:
    """What differs between SQL targets."""

    cast: Callable[[ColumnSchema, str], str]  # staged text -> typed value
    contains: Callable[[str, str], str]  # (list expression, string literal) -> boolean SQL
    temp_table: Callable[[str, str], list[str]]  # (name, SELECT) -> statements


def current_state(
    dialect: Dialect,
    target: str,
    guard: str,
    columns: list[ColumnSchema],
    staged: str,
    suffix: str = "",
) -> list[str]:
    """The statements applying ``staged`` to ``target`` (see the module docstring).

    The first statements create the temporary tables ``applied<suffix>`` and
    ``upserts<suffix>`` (DDL); the rest are DML, which a target may run in a transaction of
    its own (`split_ddl`).
    """
    applied, upserts = f"applied{suffix}", f"upserts{suffix}"
    key_columns = [c for c in columns if c.key]
    keys = " AND ".join(f"{dialect.cast(c, 's.' + q(c.name))} = t.{q(c.name)}" for c in key_columns)
    newer = (
        f"(s.__commit_lsn > t.{POSITION[0]} OR "
        f"(s.__commit_lsn = t.{POSITION[0]} AND s.__lsn > t.{POSITION[1]}))"
    )
    values = ", ".join(
        f"CASE WHEN {dialect.contains('s.__unchanged', _literal(c.name))} "
        f"THEN t.{q(c.name)} ELSE {dialect.cast(c, 's.' + q(c.name))} END AS {q(c.name)}"
        for c in columns
    )
    names = ", ".join(q(c.name) for c in columns)
    key_names = ", ".join(q(c.name) for c in key_columns)
    key_values = ", ".join(dialect.cast(c, "s." + q(c.name)) for c in key_columns)
    position = f"{POSITION[0]}, {POSITION[1]}"
    return [
        *dialect.temp_table(
            applied,
            f"SELECT s.* FROM {staged} s "
            f"WHERE NOT EXISTS (SELECT 1 FROM {target} t WHERE {keys} AND NOT {newer}) "
            f"AND NOT EXISTS (SELECT 1 FROM {guard} t WHERE {keys} AND NOT {newer})",
        ),
        *dialect.temp_table(
            upserts,
            f"SELECT {values}, s.__commit_lsn, s.__lsn FROM {applied} s "
            f"LEFT JOIN {target} t ON {keys} WHERE s.__op <> 'd'",
        ),
        f"DELETE FROM {target} t WHERE EXISTS (SELECT 1 FROM {applied} s WHERE {keys})",
        f"DELETE FROM {guard} t WHERE EXISTS (SELECT 1 FROM {applied} s WHERE {keys})",
        f"INSERT INTO {target} ({names}, {position}) SELECT * FROM {upserts}",
        f"INSERT INTO {guard} ({key_names}, {position}) "
        f"SELECT {key_values}, s.__commit_lsn, s.__lsn FROM {applied} s WHERE s.__op = 'd'",
    ]


_SYNONYMS = {"float": "real", "double": "double precision", "varchar": "text", "decimal": "numeric"}
_INTEGERS = ["smallint", "integer", "bigint"]


def _normal(spelled: str) -> str:
    low = spelled.strip().lower()
    head, _, rest = low.partition("(")
    head = _SYNONYMS.get(head, head)
    return f"{head}({rest}" if rest else head


def _precision(spelled: str) -> tuple[int, int] | None:
    if not spelled.startswith("numeric("):
        return None
    p, _, s = spelled[8:-1].partition(",")
    return int(p), int(s or 0)


def widens(have: str, wanted: str) -> bool:
    """Whether a column typed ``have`` can become ``wanted`` without changing any value.

    Types are spelled as DuckDB or PostgreSQL report them (``DECIMAL(12,4)``,
    ``numeric(12,4)``, ``INTEGER``, ``character varying(10)``, ...).
    """
    a, b = _normal(have), _normal(wanted)
    if a == b or b == "text":
        return True
    if a in _INTEGERS and b in _INTEGERS:
        return _INTEGERS.index(b) > _INTEGERS.index(a)
    if (a, b) == ("real", "double precision"):
        return True
    if a.startswith("numeric(") and b == "numeric":
        return True
    pa_, pb = _precision(a), _precision(b)
    if pa_ is not None and pb is not None:
        return pb[1] >= pa_[1] and pb[0] - pb[1] >= pa_[0] - pa_[1]
    if a.startswith("character varying(") and b.startswith("character varying("):
        return int(b[18:-1]) >= int(a[18:-1])
    return False


def fits(narrower: str, wider: str) -> bool:
    """Whether values of an older, narrower shape can be written into the wider column as it
    is: the same family only (integers, floats, decimals, varchar lengths), never text."""
    a, b = _normal(narrower), _normal(wider)
    return a != b and b != "text" and widens(narrower, wider)


def evolve(
    table: str,
    known: dict[str, str],
    columns: list[ColumnSchema],
    spell: Callable[[ColumnSchema], str],
) -> list[str]:
    """The ALTER statements bringing ``table`` (columns ``known``, updated in place) to a shape.

    A new source column is added; a column the source dropped stays, nullable; a widened type
    is widened; an older, narrower shape of the same family fits as it is (rows of other
    partitions arrive in any order).

    Raises:
        SinkFatal: any other type change, which would lose or alter values.
    """
    statements = []
    for column in columns:
        wanted = spell(column)
        have = known.get(column.name)
        if have is None:
            statements.append(f"ALTER TABLE {table} ADD COLUMN {q(column.name)} {wanted}")
        elif have.upper() == wanted.upper() or fits(wanted, have):
            continue
        elif widens(have, wanted):
            statements.append(f"ALTER TABLE {table} ALTER COLUMN {q(column.name)} TYPE {wanted}")
        else:
            raise SinkFatal(
                f"{table}.{column.name}: the source changed its type from {have} to {wanted}, "
                "which would lose or alter values here; migrate the column by hand, then resume"
            )
        known[column.name] = wanted
    return statements


def split_ddl(statements: list[str]) -> tuple[list[str], list[str]]:
    """(the DDL that prepares, the DML that applies) of a statement list."""
    ddl = [s for s in statements if s.lstrip().upper().startswith(("CREATE", "DROP"))]
    return ddl, [s for s in statements if s not in ddl]


def history(
    dialect: Dialect, target: str, columns: list[ColumnSchema], staged: str, topic: str
) -> str:
    """The statement appending ``staged`` to the history table, once per Kafka offset."""
    values = ", ".join(dialect.cast(c, "s." + q(c.name)) for c in columns)
    names = ", ".join(q(c.name) for c in columns)
    extra = ", ".join(name for name, _ in HISTORY_COLUMNS)
    topic_literal = _literal(topic)
    return (
        f"INSERT INTO {target} ({names}, {extra}) "
        f"SELECT {values}, s.__op, s.__commit_lsn, s.__lsn, s.__ts_ms, {topic_literal}, "
        f"s.__partition, s.__offset, s.__unchanged FROM {staged} s WHERE NOT EXISTS ("
        f"SELECT 1 FROM {target} h WHERE h._sluiceway_topic = {topic_literal} "
        "AND h._sluiceway_partition = s.__partition AND h._sluiceway_offset = s.__offset)"
    )
