"""A bounded load of a pipeline whose change topics do not exist yet loads nothing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from loaders.duckdb import DuckDBSink
from loaders.runner import Loader
from sluiceway.pipeline import Pipeline, PostgresSource
from sluiceway.settings import Settings
from stack.manager import Stack

pytestmark = pytest.mark.integration


def test_a_window_before_capture_started_loads_nothing(
    settings: Settings, stack: Stack, unique: str, tmp_path: Path
) -> None:
    sink = DuckDBSink(tmp_path / "empty.duckdb", unique)
    try:
        loader = Loader(settings, Pipeline(name=f"none{unique}", source=PostgresSource()), sink)
        assert loader.load_window(0, int(time.time() * 1000)) == 0
        assert sink.stored_offsets(loader.group) == {}
    finally:
        sink.close()
