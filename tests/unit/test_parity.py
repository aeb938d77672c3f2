"""Parity between a source and a target table: equal tables pass, and every kind of
difference is found and named by key."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from functools import partial
from typing import Any

from loaders.parity import canonical, compare
from migrations.verify import _json_canonical
from streaming.events import ColumnSchema

SOURCE = [((i,), (i, f"name {i}", Decimal("1.50") * i)) for i in range(1, 25_001)]


def test_equal_tables_in_any_order_pass() -> None:
    target = [(k, (r[0], r[1], Decimal(str(r[2])) + Decimal("0.000"))) for k, r in SOURCE]
    report = compare("t", lambda: iter(SOURCE), lambda: reversed(target))
    assert report.ok and report.source_rows == report.target_rows == 25_000
    assert report.ranges == 3  # keys 0-9999, 10000-19999, 20000-29999


def test_missing_extra_and_changed_rows_are_named() -> None:
    target = [pair for pair in SOURCE if pair[0] != (7,)]  # missing
    target.append(((30_001,), (30_001, "extra", Decimal(0))))  # extra
    target = [((k[0],), (k[0], "changed", r[2])) if k == (12_345,) else (k, r) for k, r in target]
    report = compare("t", lambda: iter(SOURCE), lambda: iter(target))
    assert not report.ok
    assert (report.missing_in_target, report.extra_in_target, report.different_values) == (1, 1, 1)
    assert sorted(report.differing_keys) == [7, 12_345, 30_001]
    assert len(report.differing_ranges) == 3
    assert "missing" in report.summary()


def test_text_keys_use_hash_buckets() -> None:
    source = [((f"k{i}",), (f"k{i}", i)) for i in range(100)]
    target = [p for p in source if p[0] != ("k5",)]
    report = compare("t", lambda: iter(source), lambda: iter(target))
    assert report.differing_keys == ["k5"] and report.missing_in_target == 1


def test_canonical_forms_agree_across_engines() -> None:
    moment = datetime(2024, 1, 1, 12, tzinfo=UTC)
    assert canonical(moment) == canonical(moment.astimezone(timezone(timedelta(hours=2))))
    assert canonical('{"a": 1, "b": [1, 2]}') == canonical({"b": [1, 2], "a": 1})
    assert canonical(float("nan")) == canonical(float("nan"))
    assert canonical(Decimal("1.50")) == canonical(Decimal("1.5"))
    assert canonical(memoryview(b"ab")) == b"ab"


def _side(skip: int | None) -> Iterator[tuple[tuple[Any, ...], tuple[Any, ...]]]:
    return (pair for pair in SOURCE if pair[0] != (skip,))


def test_sides_read_in_other_processes_give_the_same_report() -> None:
    """A process pool reads each side where it can use a core of its own (what a migration's
    cutover does); the report is the same as read in one thread."""
    source, target = partial(_side, None), partial(_side, 4_242)
    here = compare("t", source, target, canonical_form=None)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        there = compare("t", source, target, canonical_form=None, executor=pool)
    assert there == here
    assert there.missing_in_target == 1 and there.differing_keys == [4_242]


def test_verification_parses_json_only_in_json_columns() -> None:
    columns = [ColumnSchema("doc", "json", "jsonb"), ColumnSchema("note", "string", "text")]
    doc, note = _json_canonical(columns, [str, str])
    assert doc('{"b": 1, "a": 2}') == doc('{"a": 2,  "b": 1}')
    assert note('{"b": 1, "a": 2}') != note('{"a": 2,  "b": 1}')  # text compares as it is
