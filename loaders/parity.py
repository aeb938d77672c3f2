"""Parity: does a target table hold exactly the source table's rows? Counts and checksums per
key range, and the keys that differ.

Both sides are read once, as streams of rows in any order (engines sort text and UUIDs
differently, so no merge join): each row is put in a bucket — its integer key divided by
``range_size``, or a hash of the key for other key types — and every bucket keeps a count and
an order-independent checksum (the sum of row hashes). Buckets that disagree are read again to
name the differing keys. Values are compared in a canonical form (decimals by value, JSON
parsed, timestamps in UTC, NaN equal to NaN), so the same row in PostgreSQL and in DuckDB is
the same.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

__all__ = ["ParityReport", "canonical", "compare"]

Row = tuple[Any, ...]


def canonical(value: Any) -> Any:
    """The form in which one value compares equal across engines."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else value
    if isinstance(value, Decimal):
        return "NaN" if value.is_nan() else value.normalize()
    if isinstance(value, int):
        return value
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return canonical(orjson.loads(value))
        except orjson.JSONDecodeError:
            return value
    if isinstance(value, list | tuple):
        return tuple(canonical(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, canonical(v)) for k, v in value.items()))
    return value


def _hash(row: Row) -> int:
    return int.from_bytes(hashlib.blake2b(repr(row).encode(), digest_size=8).digest(), "big")


@dataclass
class ParityReport:
    """The comparison of one table."""

    table: str
    source_rows: int = 0
    target_rows: int = 0
    ranges: int = 0
    differing_ranges: list[str] = field(default_factory=list)
    differing_keys: list[Any] = field(default_factory=list)  # the first ones
    missing_in_target: int = 0
    extra_in_target: int = 0
    different_values: int = 0

    @property
    def ok(self) -> bool:
        return not self.differing_ranges

    def summary(self) -> str:
        if self.ok:
            return f"{self.table}: {self.source_rows:,} rows equal in {self.ranges} key ranges"
        return (
            f"{self.table}: {len(self.differing_ranges)} of {self.ranges} key ranges differ — "
            f"{self.missing_in_target} missing in the target, {self.extra_in_target} extra, "
            f"{self.different_values} with other values; first keys: {self.differing_keys[:10]}"
        )


def _bucket(key: Row, range_size: int) -> Any:
    if len(key) == 1 and isinstance(key[0], int) and not isinstance(key[0], bool):
        low = key[0] // range_size * range_size
        return (low, low + range_size - 1)
    return f"hash {_hash(key) % 64:02d}"


def _forms(
    rows: Iterable[tuple[Row, Row]], canonical_form: Callable[[Any], Any] | None
) -> Iterable[tuple[Row, Row]]:
    if canonical_form is None:
        return rows
    return (
        (tuple(canonical_form(k) for k in key), tuple(canonical_form(v) for v in row))
        for key, row in rows
    )


def _summary(
    side: Callable[[], Iterable[tuple[Row, Row]]],
    canonical_form: Callable[[Any], Any] | None,
    range_size: int,
) -> tuple[int, dict[Any, list[int]]]:
    """One side's count and checksums per key range (run where an executor runs it)."""
    total = 0
    buckets: dict[Any, list[int]] = {}
    for key, row in _forms(side(), canonical_form):
        entry = buckets.setdefault(_bucket(key, range_size), [0, 0])
        entry[0] += 1
        entry[1] = (entry[1] + _hash(row)) % (1 << 64)
        total += 1
    return total, buckets


def compare(
    table: str,
    source: Callable[[], Iterable[tuple[Row, Row]]],
    target: Callable[[], Iterable[tuple[Row, Row]]],
    *,
    range_size: int = 10_000,
    show: int = 50,
    canonical_form: Callable[[Any], Any] | None = canonical,
    parallel: bool = False,
    executor: Executor | None = None,
) -> ParityReport:
    """Compare two tables given as callables yielding (key, row) pairs (called twice at most).

    ``canonical_form`` brings a value to its comparable form (None: the sides yield values
    in one comparable form already); ``parallel`` reads the two sides in two threads (worth it
    when a side waits on its server); ``executor`` reads them with it instead — a process pool
    reads them on two cores, if ``source``, ``target`` and ``canonical_form`` can be pickled.
    """
    report = ParityReport(table)
    if executor is not None or parallel:
        with ExitStack() as stack:
            pool = executor or stack.enter_context(ThreadPoolExecutor(max_workers=2))
            sides = (
                pool.submit(_summary, source, canonical_form, range_size),
                pool.submit(_summary, target, canonical_form, range_size),
            )
            (report.source_rows, left), (report.target_rows, right) = (s.result() for s in sides)
    else:
        report.source_rows, left = _summary(source, canonical_form, range_size)
        report.target_rows, right = _summary(target, canonical_form, range_size)
    names = sorted(set(left) | set(right), key=str)
    report.ranges = len(names)
    bad = {name for name in names if left.get(name) != right.get(name)}
    report.differing_ranges = [str(name) for name in sorted(bad, key=str)]
    if not bad:
        return report

    def rows_in_bad(rows: Iterable[tuple[Row, Row]]) -> dict[Row, Row]:
        return {
            key: row for key, row in _forms(rows, canonical_form) if _bucket(key, range_size) in bad
        }

    src, dst = rows_in_bad(source()), rows_in_bad(target())
    for key in sorted(set(src) | set(dst), key=repr):
        if key not in dst:
            report.missing_in_target += 1
        elif key not in src:
            report.extra_in_target += 1
        elif src[key] != dst[key]:
            report.different_values += 1
        else:
            continue
        if len(report.differing_keys) < show:
            report.differing_keys.append(key[0] if len(key) == 1 else key)
    return report
