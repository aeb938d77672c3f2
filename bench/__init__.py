"""Benchmarks: every figure measured next to its baseline in the same run.

`bench.record` keeps ``docs/benchmarks.json`` and renders ``docs/benchmarks.md``; each
benchmark script measures with `bench.record.measure` and records with `bench.record.record`.
Benchmarks are not tests: they print a table and never fail a build on time.
"""

__all__: list[str] = []
