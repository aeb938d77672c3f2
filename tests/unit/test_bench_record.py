"""Benchmark plumbing: figures measured beside their baselines, stored and rendered."""

from __future__ import annotations

import json
from pathlib import Path

from bench.record import SuiteRun, load_suite, measure, record, write_markdown


def test_measure_alternates_and_orients_the_ratio() -> None:
    calls: list[str] = []
    rates = iter([100.0, 80.0, 120.0])
    costs = iter([2.0, 3.0, 1.0])

    def baseline() -> float:
        calls.append("baseline")
        return 100.0

    def rate() -> float:
        calls.append("candidate")
        return next(rates)

    figure = measure("x rows/s", "rows/s", rate, "raw", baseline, runs=3)
    assert calls == ["baseline", "candidate"] * 3
    assert (figure.value, figure.min, figure.max, figure.ratio) == (100.0, 80.0, 120.0, 1.0)

    slower = measure("y s", "s", lambda: next(costs), "raw", lambda: 1.0, higher_is_better=False)
    assert slower.value == 2.0 and slower.ratio == 0.5  # twice the baseline's cost


def test_record_replaces_by_name_and_renders(tmp_path: Path) -> None:
    json_path, md_path = tmp_path / "b.json", tmp_path / "b.md"
    first = measure("capture rows/s", "rows/s", lambda: 90.0, "pg_recvlogical", lambda: 100.0)
    record([first], json_path, md_path)
    again = measure("capture rows/s", "rows/s", lambda: 95.0, "pg_recvlogical", lambda: 100.0)
    record([again], json_path, md_path)
    stored = json.loads(json_path.read_text())
    assert len(stored) == 1
    assert stored[0]["value"] == 95.0 and stored[0]["ratio"] == 0.95
    assert set(stored[0]) == {
        "name", "value", "unit", "baseline", "baseline_value", "ratio",
        "runs", "min", "max", "date", "machine", "versions",
    }  # fmt: skip
    assert stored[0]["versions"]["python"] and "Versions measured with" in md_path.read_text()
    markdown = md_path.read_text()
    assert "| capture rows/s | 95 rows/s | pg_recvlogical | 100 rows/s | 0.95x |" in markdown


def test_the_last_suite_is_rendered_under_the_table(tmp_path: Path) -> None:
    suite_path, md_path = tmp_path / "suite.json", tmp_path / "bench.md"
    run = SuiteRun(
        date="2026-12-02",
        machine="test",
        total_seconds=1500.0,
        seconds={"bench.capture_postgres": 600.0, "bench.load": 900.0},
    )
    suite_path.write_text(json.dumps(run))
    assert load_suite(suite_path) == run
    assert load_suite(tmp_path / "missing.json") is None
    write_markdown([], md_path, suite_path, tmp_path / "missing.json")
    markdown = md_path.read_text()
    assert "took **25.0 minutes**: capture_postgres 600 s, load 900 s." in markdown
    assert "The last subset" not in markdown
    quick_path = tmp_path / "quick.json"
    quick_path.write_text(json.dumps(SuiteRun(**{**run, "total_seconds": 120.0})))
    write_markdown([], md_path, suite_path, quick_path)
    markdown = md_path.read_text()
    assert "The last full suite (`make bench`, 2026-12-02, test) took **25.0 minutes**" in markdown
    assert "The last subset (`make bench-quick`, 2026-12-02, test) took **2.0 minutes**" in markdown
