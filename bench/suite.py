"""The benchmark suite: every benchmark in turn, each in its own process, each recording its
figures (beside their same-run baselines) into docs/benchmarks.json and docs/benchmarks.md.

    python -m bench.suite            # make bench: the full suite (its time per benchmark
                                     # is recorded: docs/benchmarks-suite.json)
    python -m bench.suite --quick    # make bench-quick: a subset at a tenth of the size,
                                     # figures tagged [quick] (about 2 minutes; its time
                                     # too: docs/benchmarks-suite-quick.json)
    python -m bench.suite --only bench.latency bench.snapshot_postgres

``bench.dlt_merge`` (the measurement behind the loaders' choice of hand-written merges over
dlt's) is not one of the suite's figures and runs on its own: ``python -m bench.dlt_merge``.

A benchmark that fails is reported and the suite goes on; the exit status says whether all ran.
At the end the suite cleans up what the benchmarks left: their PostgreSQL databases (replication
slots first, so no WAL stays retained) and their topics.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from rich.console import Console
from rich.table import Table

from bench.record import QUICK_PATH, SUITE_PATH, record_suite

__all__ = ["FULL", "QUICK", "main"]

FULL: list[tuple[str, list[str]]] = [
    ("bench.capture_postgres", []),
    ("bench.snapshot_postgres", []),
    ("bench.latency", []),
    ("bench.capture_mysql", ["--changes", "500000"]),
    ("bench.enrich", []),
    ("bench.load", []),
    ("bench.replay", []),
    ("bench.migration", []),
]
QUICK: list[tuple[str, list[str]]] = [
    ("bench.capture_postgres", ["--rows", "100000", "--tag", "quick"]),
    ("bench.snapshot_postgres", ["--rows", "100000", "--tag", "quick"]),
    ("bench.load", ["--rows", "100000", "--targets", "duckdb", "postgres", "--tag", "quick"]),
]
console = Console()


def clean_up() -> None:
    """Drop the benchmarks' PostgreSQL databases (``bench_*``, slots first) and topics
    (``bench*``)."""
    from bench.process import drop_databases, drop_topics
    from sluiceway.connect import postgres_connection
    from sluiceway.settings import load_settings

    settings = load_settings()
    admin = postgres_connection(settings.postgres, database="postgres")
    with admin.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE datname LIKE 'bench\\_%'")
        databases = [name for (name,) in cur.fetchall()]
    admin.close()
    drop_databases(settings, databases)
    topics = drop_topics(settings, "bench")
    console.print(f"cleaned up: {len(databases)} bench databases and {topics} topics")


def main() -> None:
    """Run the suite (or ``--quick``, or ``--only`` some modules) and summarise the times."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the subset (bench-quick)")
    parser.add_argument("--only", nargs="+", default=None, help="these modules only")
    args = parser.parse_args()
    suite = QUICK if args.quick else FULL
    if args.only:
        suite = [(m, a) for m, a in suite if m in args.only]
    times = Table("benchmark", "seconds", "result")
    seconds: dict[str, float] = {}
    failed = 0
    started = time.monotonic()
    for number, (module, arguments) in enumerate(suite, 1):
        console.rule(f"[{number}/{len(suite)}] {module} {' '.join(arguments)}")
        begin = time.monotonic()
        done = subprocess.run([sys.executable, "-m", module, *arguments], check=False)
        failed += done.returncode != 0
        seconds[module] = time.monotonic() - begin
        times.add_row(
            module,
            f"{seconds[module]:,.0f}",
            "ok" if done.returncode == 0 else f"[red]failed ({done.returncode})[/red]",
        )
    clean_up()
    total = time.monotonic() - started
    console.print(times)
    console.print(f"suite: {total:,.0f} s; see docs/benchmarks.md")
    if not args.only and not failed:  # the wall time docs/benchmarks.md states is a whole run's
        record_suite(seconds, total, QUICK_PATH if args.quick else SUITE_PATH)
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
