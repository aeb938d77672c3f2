"""The DuckDB file shared between a loader and other processes: attached for moments, with a
turn for readers between back-to-back batches."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from loaders.duckdb.sink import DuckDBSink, _Attachment, attached
from sluiceway.errors import SinkUnavailable

_HOLD = """
import sys, duckdb
conn = duckdb.connect(sys.argv[1])
print("held", flush=True)
sys.stdin.readline()
"""


def _hold(path: Path) -> subprocess.Popen[str]:
    """Another process holding the file until its stdin closes."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_sink_leaves_the_file_to_other_processes_between_batches(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    sink = DuckDBSink(path, "shop")
    assert sink.stored_offsets("g") == {}
    # Released: another process opens it for writing at once.
    other = duckdb.connect(str(path))
    other.execute("CREATE TABLE shop.notes AS SELECT 1 AS n")
    other.close()
    with attached(path) as conn:
        assert conn.execute("SELECT n FROM shop.notes").fetchall() == [(1,)]
    sink.close()


def test_attaching_again_waits_for_the_readers_turn(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    file = _Attachment(path, turn=0.2)
    file.attach().execute("CREATE TABLE t AS SELECT 1 AS n")
    file.detach()
    detached = time.monotonic()
    file.attach()
    assert time.monotonic() - detached >= 0.2
    file.close()


def test_a_look_fails_fast_while_another_process_writes(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    duckdb.connect(str(path)).close()
    holder = _hold(path)
    try:
        with pytest.raises(SinkUnavailable, match="lock"), attached(path, wait=0):
            pass
    finally:
        holder.communicate("")
    with attached(path, wait=5) as conn:  # released: the look gets in
        assert conn.execute("SELECT 42").fetchall() == [(42,)]


def test_a_write_by_another_process_in_between_is_noticed(tmp_path: Path) -> None:
    """What the sink caches about the tables (their columns) holds only while no other
    process wrote the file; a look by another process does not count."""
    path = tmp_path / "w.duckdb"
    file = _Attachment(path)
    seen = []  # whether the file was as this process left it, at each attach
    file.attach().execute("CREATE TABLE t AS SELECT 1 AS n")
    seen.append(file.unchanged)  # never left before
    file.detach()
    with attached(path) as conn:
        assert conn.execute("SELECT n FROM t").fetchall() == [(1,)]
    file.attach()
    seen.append(file.unchanged)  # only looked at
    file.detach()
    other = duckdb.connect(str(path))
    other.execute("ALTER TABLE t ADD COLUMN m INTEGER")
    other.close()
    file.attach()
    seen.append(file.unchanged)  # written by another process
    file.close()
    assert seen == [False, True, False]


def test_a_look_inside_a_look_leaves_the_outer_one_in_place(tmp_path: Path) -> None:
    for name, value in (("a", 1), ("b", 2)):
        conn = duckdb.connect(str(tmp_path / f"{name}.duckdb"))
        conn.execute(f"CREATE TABLE t AS SELECT {value} AS n")
        conn.close()
    with attached(tmp_path / "a.duckdb") as outer:
        with attached(tmp_path / "b.duckdb") as inner:
            assert inner.execute("SELECT n FROM t").fetchall() == [(2,)]
        assert outer.execute("SELECT n FROM t").fetchall() == [(1,)]
