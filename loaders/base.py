"""The one base every target shares: what a load batch is and what a sink must do with it.

A `LoadBatch` is what the runner read from Kafka since the last write: per source table, its
shape and its changes in offset order, plus the next offset of every partition read. A `Sink`
applies the batch to its target:

- **current state**: one row per primary key, upserts and deletes applied, guarded by
  position — a change older than what the target holds (by ``(commit_lsn, lsn)``) never
  overwrites it, so replays and out-of-order windows leave the same rows; deleted keys keep a
  guard entry so an old insert replayed later cannot resurrect them; TOAST-unchanged columns
  keep the stored value;
- **history**: every change appended with its op, position and timestamps, once per
  (topic, partition, offset);
- **offsets**: stored with the rows, in the same transaction where the target is
  transactional, so a crash between the two cannot happen (effectively once).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal

from loaders.changes import Change, TableRef
from sluiceway.errors import BadRecords, IncompatibleChange, SinkFatal
from streaming.events import ColumnSchema, TableSchema

__all__ = ["LoadBatch", "Mode", "RawRecords", "Sink", "TableBatch", "latest_per_key"]

Mode = Literal["current", "history", "both"]

POSITION = ("_sluiceway_commit_lsn", "_sluiceway_lsn")


@dataclass
class RawRecords:
    """The Kafka records of one table shape in one batch, as read: SQL targets stage these
    bytes in bulk and let the engine parse and cast them (no per-row Python)."""

    topic: str
    partitions: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    values: list[bytes] = field(default_factory=list)
    # The bulk path hands back to Python the batches it does not handle (Connect JSON,
    # TOAST-unchanged values to carry over); set to force that path.
    parse_in_python: bool = False

    def append(self, partition: int, offset: int, key: bytes | None, value: bytes) -> None:
        self.partitions.append(partition)
        self.offsets.append(offset)
        self.keys.append(key)
        self.values.append(value)


@dataclass
class TableBatch:
    """The changes of one source table in one batch, in Kafka order: the raw records as
    read, parsed into `Change` objects only for the sinks that need them (`parsed`)."""

    table: TableRef
    schema: TableSchema
    raw: RawRecords | None = None
    changes: list[Change] = field(default_factory=list)
    # What a sink's `Sink.prepare` made of the records ahead of its `Sink.write` (its own).
    prepared: Any = None

    def parsed(self) -> list[Change]:
        """The changes as objects, parsed from the raw records on first use.

        Raises:
            BadRecords: naming every record that is not a change event.
        """
        if not self.changes and self.raw is not None:
            raw = self.raw
            keys = [c.name for c in self.schema.columns if c.key]
            bad: list[tuple[str, int, int, str]] = []
            for partition, offset, key, value in zip(
                raw.partitions, raw.offsets, raw.keys, raw.values, strict=True
            ):
                try:
                    change = Change.parse(raw.topic, partition, offset, key, value)
                except SinkFatal as exc:
                    bad.append((raw.topic, partition, offset, str(exc.__cause__ or exc)))
                    continue
                if change is None:
                    continue
                if change.key is None and change.row is not None and keys:
                    # A record without a Kafka key (another producer): the row names its key.
                    change.key = {name: change.row.get(name) for name in keys}
                self.changes.append(change)
            if bad:
                self.changes.clear()
                raise BadRecords(bad)
        return self.changes

    def records(self) -> list[tuple[str, int, int, bytes | None, bytes | None]]:
        """(topic, partition, offset, key, value) of each raw record."""
        raw = self.raw
        if raw is None:
            return []
        return [
            (raw.topic, p, o, k, v)
            for p, o, k, v in zip(raw.partitions, raw.offsets, raw.keys, raw.values, strict=True)
        ]

    def subset(self, keep: list[int]) -> TableBatch:
        """A batch of the raw records at the indexes ``keep`` (in order)."""
        raw = self.raw
        if raw is None:
            raise ValueError("only raw batches can be split")
        part = RawRecords(raw.topic, parse_in_python=raw.parse_in_python)
        for i in keep:
            part.append(raw.partitions[i], raw.offsets[i], raw.keys[i], raw.values[i])
        return TableBatch(self.table, self.schema, part)

    def rows(self) -> int:
        return len(self.raw.values) if self.raw is not None else len(self.changes)

    def target_name(self, suffix: str = "") -> str:
        """The target table's name: ``<table>``, or ``<schema>_<table>`` outside ``public``."""
        schema, name = self.table
        return (name if schema == "public" else f"{schema}_{name}") + suffix

    def key_columns(self) -> list[ColumnSchema]:
        """The primary key columns current state needs.

        Raises:
            SinkFatal: the table has no primary key.
        """
        keys = [c for c in self.schema.columns if c.key]
        if not keys:
            schema, name = self.table
            raise IncompatibleChange(f"{schema}.{name} has no primary key: load it in history mode")
        return keys


@dataclass
class LoadBatch:
    """What one write applies: table changes and the offsets that follow them."""

    group: str
    # per (topic, schema id), in arrival order: an older shape's rows come first
    tables: dict[tuple[str, str], TableBatch] = field(default_factory=dict)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset to read
    # records read that are not change events: (topic, partition, offset, key, value, reason)
    rejected: list[tuple[str, int, int, bytes | None, bytes | None, str]] = field(
        default_factory=list
    )

    def rows(self) -> int:
        return sum(t.rows() for t in self.tables.values())


def latest_per_key(changes: list[Change]) -> list[Change]:
    """The newest change of each key (by position), TOAST-unchanged values carried over
    from an older change of the same key in the batch where it had them."""
    latest: dict[bytes | str, Change] = {}
    for change in changes:
        if change.key is None or change.op == "t":
            continue
        key = repr(sorted(change.key.items()))
        held = latest.get(key)
        if held is not None and held.position > change.position:
            continue
        if change.unchanged and held is not None and held.row is not None and change.row:
            for column in list(change.unchanged):
                if column not in held.unchanged and column in held.row:
                    change.row[column] = held.row[column]
                    change.unchanged.remove(column)
        latest[key] = change
    return list(latest.values())


class Sink(ABC):
    """A target: DuckDB, PostgreSQL, S3, BigQuery, Snowflake."""

    name: str

    def prepare(self, batch: LoadBatch, mode: Mode) -> None:  # noqa: B027 - optional
        """Work on ``batch`` that needs no target connection, such as parsing and staging its
        records, done on a thread of its own while the batch before is written; `write`
        then finds it done. It must not fail: what it cannot do, `write` does again. A sink
        that overrides it gets that thread from the runner."""

    @abstractmethod
    def stored_offsets(self, group: str) -> dict[tuple[str, int], int]:
        """The next offset to read per (topic, partition), as the target last stored it."""

    @abstractmethod
    def write(self, batch: LoadBatch, mode: Mode) -> None:
        """Apply a batch and store its offsets (atomically where the target allows)."""

    def close(self) -> None:  # noqa: B027 - most sinks hold nothing to release
        """Release connections."""
