"""Record benchmark figures into docs/benchmarks.json and render docs/benchmarks.md.

A figure is always measured with its baseline in the same run: `measure` alternates the two
(baseline, candidate, baseline, ...) so drift on the machine hits both, and keeps the median of
each. ``ratio`` is oriented so that higher is better: value / baseline for rates, baseline /
value for costs (seconds, bytes).

    python -m bench.record          # re-render docs/benchmarks.md from the JSON
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TypedDict

__all__ = [
    "QUICK_PATH",
    "SUITE_PATH",
    "Figure",
    "SuiteRun",
    "command",
    "machine",
    "measure",
    "record",
    "record_suite",
    "render",
    "rss_budget",
    "show",
    "summarize",
    "versions",
    "write_markdown",
]

DOCS = Path(__file__).resolve().parent.parent / "docs"
JSON_PATH = DOCS / "benchmarks.json"
MD_PATH = DOCS / "benchmarks.md"
NOTES_PATH = DOCS / "benchmarks-notes.md"  # hand-written: what bounds each figure
SUITE_PATH = DOCS / "benchmarks-suite.json"  # the last full suite's wall time, per benchmark
QUICK_PATH = DOCS / "benchmarks-suite-quick.json"  # the same for the last bench-quick


@dataclass(frozen=True)
class Figure:
    """One benchmark figure and its baseline, as stored in docs/benchmarks.json."""

    name: str
    value: float
    unit: str
    baseline: str
    baseline_value: float
    ratio: float
    runs: int
    min: float
    max: float
    date: str
    machine: str
    versions: dict[str, str] = field(default_factory=dict)  # what was measured, and with what


class SuiteRun(TypedDict):
    """How long the last full suite took, as stored in docs/benchmarks-suite.json."""

    date: str
    machine: str
    total_seconds: float
    seconds: dict[str, float]  # per benchmark module


def machine() -> str:
    """A one-line description of this machine: CPU model, cores, memory, OS."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB, {platform.system()} {platform.release()}"
    )


@functools.cache
def versions() -> dict[str, str]:
    """The versions of what the figures depend on: servers, clients, engines (read once per
    process: every figure of a run records the same)."""
    from importlib import metadata

    found = {"python": platform.python_version()}
    for package in ("confluent-kafka", "psycopg2-binary", "duckdb", "pyarrow", "quixstreams"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    try:
        import confluent_kafka

        found["librdkafka"] = confluent_kafka.libversion()[0]
    except ImportError:
        pass
    for name, pom, prop in (
        ("kafka", "stack/kafka/pom.xml", "kafka.version"),
        ("debezium", "bench/debezium/pom.xml", "debezium.version"),
    ):
        text = (DOCS.parent / pom).read_text() if (DOCS.parent / pom).is_file() else ""
        start = text.find(f"<{prop}>")
        if start >= 0:
            found[name] = text[start + len(prop) + 2 : text.find(f"</{prop}>")]
    postgres = _postgres_version()
    if postgres:
        found["postgresql"] = postgres
    return found


def _postgres_version() -> str | None:
    import subprocess

    from stack.postgres import postgres_bindir

    bindir = postgres_bindir()
    if bindir is None:
        return None
    done = subprocess.run(
        [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=False
    )
    words = done.stdout.split()  # postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)
    return words[2] if done.returncode == 0 and len(words) > 2 else None


def measure(
    name: str,
    unit: str,
    candidate: Callable[[], float],
    baseline: str,
    baseline_run: Callable[[], float],
    *,
    runs: int = 3,
    higher_is_better: bool = True,
) -> Figure:
    """Run ``baseline_run`` and ``candidate`` alternately ``runs`` times each.

    Each callable returns its own measurement in ``unit`` (e.g. rows/s, or seconds).
    """
    values: list[float] = []
    baselines: list[float] = []
    for _ in range(runs):
        baselines.append(baseline_run())
        values.append(candidate())
    return summarize(name, unit, values, baseline, baselines, higher_is_better=higher_is_better)


def summarize(
    name: str,
    unit: str,
    values: list[float],
    baseline: str,
    baselines: list[float],
    *,
    higher_is_better: bool = True,
) -> Figure:
    """A figure from runs measured in the same session as its baseline's runs."""
    value = statistics.median(values)
    base = statistics.median(baselines) if baselines else 0.0
    ratio = (value / base if higher_is_better else base / value) if value and base else 0.0
    return Figure(
        name=name,
        value=round(value, 3),
        unit=unit,
        baseline=baseline,
        baseline_value=round(base, 3),
        ratio=round(ratio, 3),
        runs=len(values),
        min=round(min(values), 3),
        max=round(max(values), 3),
        date=datetime.now(UTC).strftime("%Y-%m-%d"),
        machine=machine(),
        versions=dict(versions()),
    )


def rss_budget(name: str, values: list[float], budget: float = 300.0) -> Figure:
    """A peak-RSS figure (MiB) against the memory budget every worker has."""
    return summarize(
        name,
        "MiB",
        values,
        f"{budget:g} MiB budget",
        [budget] * len(values),
        higher_is_better=False,
    )


def load(path: Path = JSON_PATH) -> list[Figure]:
    """The recorded figures."""
    if not path.is_file():
        return []
    return [Figure(**item) for item in json.loads(path.read_text())]


def record(figures: list[Figure], path: Path = JSON_PATH, md_path: Path = MD_PATH) -> None:
    """Store ``figures`` (replacing earlier ones of the same name) and re-render the markdown."""
    kept = {f.name: f for f in load(path)}
    for figure in figures:
        kept[figure.name] = figure
    ordered = sorted(kept.values(), key=lambda f: f.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([asdict(f) for f in ordered], indent=2) + "\n")
    write_markdown(ordered, md_path)


def load_suite(path: Path = SUITE_PATH) -> SuiteRun | None:
    """The last full suite's timings, if one was recorded."""
    if not path.is_file():
        return None
    suite: SuiteRun = json.loads(path.read_text())
    return suite


def record_suite(seconds: dict[str, float], total: float, path: Path = SUITE_PATH) -> None:
    """Store how long a suite (the full one, or bench-quick's at `QUICK_PATH`) and each of its
    benchmarks took, and re-render."""
    suite = SuiteRun(
        date=datetime.now(UTC).date().isoformat(),
        machine=machine(),
        total_seconds=round(total, 1),
        seconds={module: round(value, 1) for module, value in seconds.items()},
    )
    path.write_text(json.dumps(suite, indent=2) + "\n")
    write_markdown()


def write_markdown(
    figures: list[Figure] | None = None,
    md_path: Path = MD_PATH,
    suite_path: Path = SUITE_PATH,
    quick_path: Path = QUICK_PATH,
) -> None:
    """Render docs/benchmarks.md from ``figures`` (the recorded ones by default), the last
    suites' timings and the hand-written notes."""
    md_path.write_text(
        render(
            load() if figures is None else figures,
            _notes(),
            load_suite(suite_path),
            load_suite(quick_path),
        )
    )


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.3g}"


def render(
    figures: list[Figure],
    notes: str | None = None,
    suite: SuiteRun | None = None,
    quick: SuiteRun | None = None,
) -> str:
    """docs/benchmarks.md: one table, each figure beside its baseline from the same run, the
    last full suite's and bench-quick's wall times, then the hand-written notes
    (docs/benchmarks-notes.md)."""
    lines = [
        "# Benchmarks",
        "",
        "Generated from `docs/benchmarks.json` by `python -m bench.record`; do not edit by hand.",
        "Each figure is the median of its runs, measured in the same run as its baseline;",
        "ratio > 1 means better than the baseline.",
        "",
        "| figure | value | baseline | baseline value | ratio | runs (min-max) | date | machine |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        lines.append(
            f"| {f.name} | {_number(f.value)} {f.unit} | {f.baseline} | "
            f"{_number(f.baseline_value)} {f.unit} | {f.ratio:.2f}x | "
            f"{f.runs} ({_number(f.min)}-{_number(f.max)}) | {f.date} | {f.machine} |"
        )
    if not figures:
        lines.append("| (none recorded yet) | | | | | | | |")
    sets: dict[str, list[str]] = {}
    for f in figures:
        if f.versions:
            spelled = ", ".join(f"{k} {v}" for k, v in sorted(f.versions.items()))
            sets.setdefault(spelled, []).append(f.date)
    if sets:
        lines += ["", "Versions measured with (figures recorded on the dates given):", ""]
        for spelled, dates in sets.items():
            lines.append(f"- {min(dates)}..{max(dates)}: {spelled}")
    for run, which in ((suite, "full suite (`make bench`"), (quick, "subset (`make bench-quick`")):
        if run:
            spelled = ", ".join(
                f"{module.removeprefix('bench.')} {value:,.0f} s"
                for module, value in run["seconds"].items()
            )
            lines += [
                "",
                f"The last {which}, {run['date']}, {run['machine']}) took "
                f"**{run['total_seconds'] / 60:.1f} minutes**: {spelled}.",
            ]
    text = "\n".join(lines) + "\n"
    if notes:
        text += "\n" + notes.strip() + "\n"
    return text


def _notes() -> str | None:
    return NOTES_PATH.read_text() if NOTES_PATH.is_file() else None


def show(figures: list[Figure]) -> None:
    """Print the figures as a table: value, baseline, ratio."""
    from rich.console import Console
    from rich.table import Table

    table = Table("figure", "value", "baseline", "ratio")
    for f in figures:
        precision = ",.2f" if f.value < 100 else ",.0f"
        table.add_row(
            f.name,
            f"{f.value:{precision}} {f.unit}",
            f"{f.baseline_value:{precision}}",
            f"{f.ratio:.2f}x",
        )
    Console().print(table)


def command(
    doc: str | None,
    run: Callable[..., list[Figure]],
    size: str,
    default: int,
    options: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    """A benchmark's command line: ``--<size> N --runs N [--no-record] [--tag T]`` and the
    benchmark's own ``options``; runs ``run(settings, size, runs, **options)``, prints the
    figures and records them (names tagged ``[T]``: bench-quick's smaller runs never replace
    the full suite's figures)."""
    from sluiceway.settings import load_settings

    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument(f"--{size}", type=int, default=default)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-record", action="store_true", help="print only")
    parser.add_argument(
        "--tag", default="", help="appended to every figure's name, e.g. 'quick' (bench-quick)"
    )
    if options is not None:
        options(parser)
    args = vars(parser.parse_args())
    amount, runs = args.pop(size.replace("-", "_")), args.pop("runs")
    tag, no_record = args.pop("tag"), args.pop("no_record")
    figures = run(load_settings(), amount, runs, **args)  # what is left: the own options
    if tag:
        figures = [replace(f, name=f"{f.name} [{tag}]") for f in figures]
    show(figures)
    if not no_record:
        record(figures)


if __name__ == "__main__":
    write_markdown()
    print(f"rendered {MD_PATH}")
