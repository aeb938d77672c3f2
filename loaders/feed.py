"""The feed: a batch's records handed to DuckDB as one newline-delimited JSON file.

Staging (`loaders.staging`) lets DuckDB parse a batch's Kafka values with ``read_json``, its
fastest way in for JSON (20k envelopes: ~20 ms, against ~45 ms for the same values scanned from
an Arrow string column and parsed with ``json_transform``), and one that needs no pyarrow in
the process: pyarrow and the numpy it imports cost a loader ~75 MiB of resident memory
before it reads a record, a quarter of its budget.

A feed is a memory-backed file of its own (``memfd_create``; a temporary file where the
platform has none), rewritten for each batch and emptied once DuckDB has read it, so no file
outlives the loader and nothing is left on disk. DuckDB opens it by its ``/proc/self/fd``
path. The bytes are what the batch's Kafka values already are, joined by newlines: a value
that is not one JSON line (empty, or with a newline of its own) is refused here, and the
caller parses the batch in Python instead.
"""

from __future__ import annotations

import itertools
import operator
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from loaders.sql import literal, q
from streaming.events import TableSchema

__all__ = ["Feed", "check_select", "envelope", "parse_select", "place_select", "read_sql", "runs"]

_MIN_OBJECT = 1 << 24  # read_json's largest line (its default): the feed's longest, if more


class Feed:
    """One file DuckDB reads a batch from; one per thread that stages (not thread-safe)."""

    def __init__(self) -> None:
        self._temporary: str | None = None
        if hasattr(os, "memfd_create"):
            self._fd = os.memfd_create("sluiceway-feed", os.MFD_CLOEXEC)
            self.path = f"/proc/self/fd/{self._fd}"
        else:  # pragma: no cover - platforms without memfd (macOS)
            self._fd, self._temporary = tempfile.mkstemp(prefix="sluiceway-feed-", suffix=".json")
            self.path = self._temporary
        self.longest = 0  # at least the longest line last written, in bytes

    def lines(self, values: Sequence[bytes]) -> bool:
        """Write ``values`` as the file's lines; False, with the file empty, if one of them
        holds a newline (it would not be one line: the Python path takes the batch). An empty
        value makes a blank line, which the reader skips: the caller checks the row count.

        A 100k-value batch (27 MB): the join ~18 ms, the newline check ~8 ms (what removing
        the newlines leaves: faster than counting them, ~17 ms), the write ~12 ms."""
        if not values:
            self.clear()
            return False
        data = b"\n".join(values)
        if len(data) - len(data.replace(b"\n", b"")) != len(values) - 1:
            self.clear()
            return False
        # No line is longer than the whole; only a batch over the reader's default limit
        # needs its longest line measured (~10 ms per 100k values).
        self.longest = len(data) if len(data) < _MIN_OBJECT else max(map(len, values))
        self._write(data)
        return True

    def _write(self, data: bytes) -> None:
        os.ftruncate(self._fd, 0)
        view, at = memoryview(data), 0
        while at < len(data):
            at += os.pwrite(self._fd, view[at:], at)

    def read(self) -> bytes:
        """What the file holds now: written by DuckDB (a ``COPY ... TO`` its path), say."""
        size, data = os.fstat(self._fd).st_size, bytearray()
        while len(data) < size:
            chunk = os.pread(self._fd, size - len(data), len(data))
            if not chunk:
                break
            data += chunk
        return bytes(data)

    def clear(self) -> None:
        """Empty the file (its memory is given back)."""
        os.ftruncate(self._fd, 0)

    def close(self) -> None:
        os.close(self._fd)
        if self._temporary is not None:
            Path(self._temporary).unlink()


def read_sql(feed: Feed, columns: dict[str, str], *, lenient: bool = False) -> str:
    """``read_json`` of the feed's lines into ``columns`` (name: DuckDB type). ``lenient``: a
    line that is not a JSON object of those types becomes a row of NULLs in its place, as
    ``json_transform`` would make it, instead of an error (which would abort the transaction
    a DuckDB target stages in)."""
    spec = ", ".join(f"{literal(name)}: {literal(kind)}" for name, kind in columns.items())
    size = max(_MIN_OBJECT, feed.longest + 1)
    return (
        f"read_json({literal(feed.path)}, format = 'newline_delimited', records = true, "
        f"maximum_object_size = {size}, ignore_errors = {str(lenient).lower()}, "
        f"columns = {{{spec}}})"
    )


def envelope(schema: TableSchema) -> dict[str, str]:
    """The parts of an envelope staging reads, each column of a row as text."""
    row = "STRUCT(" + ", ".join(f"{q(c.name)} VARCHAR" for c in schema.columns) + ")"
    return {
        "op": "VARCHAR",
        "ts_ms": "BIGINT",
        "source": "STRUCT(commit_lsn BIGINT, lsn BIGINT, ts_ms BIGINT)",
        "after": row,
        "before": row,
        "unchanged": "VARCHAR",  # only where capture marked TOAST-unchanged columns
        "schema": "VARCHAR",  # only a Connect JSON envelope has it at the top
    }


def runs(partitions: list[int], offsets: list[int]) -> tuple[list[int], list[int], list[int]]:
    """(first index, partition, first offset) of each run of consecutive offsets of one
    partition, as three lists. Offsets minus their index are constant along a run, so runs
    are found by grouping in C, not by a comparison per record in Python."""
    firsts: list[int] = []
    parts: list[int] = []
    starts: list[int] = []
    index = 0
    steps = map(operator.sub, offsets, range(len(offsets)))
    for (partition, step), run in itertools.groupby(zip(partitions, steps, strict=True)):
        firsts.append(index)
        parts.append(partition)
        starts.append(step + index)
        index += sum(1 for _ in run)
    return firsts, parts, starts


def parse_select(schema: TableSchema, source: str) -> str:
    """SQL reading envelopes from ``source`` (a `read_sql`) into the staged columns, but for
    their places (`place_select`), one row per record in batch order: ``__python`` marks the
    records the Python path must take, and a record that is not a change event has no
    ``__op``."""
    values = ", ".join(
        f"CASE WHEN op = 'd' THEN before.{q(c.name)} ELSE after.{q(c.name)} END AS {q(c.name)}"
        for c in schema.columns
    )
    return (
        f"SELECT {values}, op AS __op, COALESCE(source.commit_lsn, 0) AS __commit_lsn, "
        "COALESCE(source.lsn, 0) AS __lsn, COALESCE(source.ts_ms, ts_ms, 0) AS __ts_ms, "
        f'unchanged IS NOT NULL OR "schema" IS NOT NULL AS __python FROM {source}'
    )


def place_select(
    schema: TableSchema, parsed: str, runs: tuple[list[int], list[int], list[int]], first: int
) -> str:
    """SQL giving each row of ``parsed`` (a `parse_select` table) its partition and offset,
    from its index in the batch (``rowid - first``) and the batch's `runs` (as literals), in
    the staged column order; truncations are left out."""
    values = ", ".join(f"x.{q(c.name)}" for c in schema.columns)
    firsts, partitions, starts = runs
    index = f"(x.rowid - {first})"
    source = "x"
    if len(firsts) == 1:  # one run (a batch of one partition)
        place = f"{partitions[0]} AS __partition, {starts[0]} + {index}"
    elif len(firsts) <= _CASE_RUNS:  # a few runs (a few partitions): a CASE per row
        shifts = [s - b for s, b in zip(starts, firsts, strict=True)]
        cases = list(zip(firsts[1:], partitions, shifts, strict=False))
        part = " ".join(f"WHEN {index} < {b} THEN {p}" for b, p, _ in cases)
        shift = " ".join(f"WHEN {index} < {b} THEN {d}" for b, _, d in cases)
        place = (
            f"CASE {part} ELSE {partitions[-1]} END AS __partition, "
            f"{index} + CASE {shift} ELSE {starts[-1] - firsts[-1]} END"
        )
    else:  # many (gaps, interleaving): the runs joined on
        literal = ", ".join(f"({b}, {p}, {o})" for b, p, o in zip(*runs, strict=True))
        place = f"r.p AS __partition, r.o + ({index} - r.b)"
        source = f"x ASOF JOIN (VALUES {literal}) r(b, p, o) ON {index} >= r.b"
    return (
        f"SELECT {values}, x.__op, x.__commit_lsn, x.__lsn, CAST([] AS VARCHAR[]) AS "
        f"__unchanged, {place} AS __offset, x.__ts_ms FROM {parsed} {source} "
        "WHERE x.__op IS DISTINCT FROM 't'"
    )


_CASE_RUNS = 16
"""Runs up to which a record's place is a CASE expression (two comparisons per row at three
partitions), beyond which the runs are joined on (an ASOF join sorts both sides)."""


def check_select(schema: TableSchema, parsed: str, latest: bool) -> str:
    """SQL reading, in one scan of ``parsed``: its row count and first and last ``rowid``;
    the ``rowid`` of each record that is not a change event; how many records the Python path
    must take; the rows to stage (truncations left out); and if ``latest``, how many keys
    those have (a key that repeats needs the newest-per-key window)."""
    keys = ", ".join(q(c.name) for c in schema.columns if c.key)
    distinct = f"count(DISTINCT ({keys})) FILTER (WHERE {_STAGED})" if latest else "NULL"
    return (
        "SELECT count(*), min(rowid), max(rowid), "
        "list(rowid) FILTER (WHERE __op IS NULL AND NOT __python), "
        f"count(*) FILTER (WHERE __python AND {_STAGED}), count(*) FILTER (WHERE {_STAGED}), "
        f"{distinct} FROM {parsed}"
    )


_STAGED = "__op IS DISTINCT FROM 't'"
