"""A table view keeps the newest row per key, in a scratch store of its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from sluiceway.settings import KafkaSettings
from streaming.processors.tables import TableView


def _event(op: str, row: dict[str, Any], commit: int, lsn: int, connect: bool = False) -> bytes:
    envelope = {
        "before": row if op == "d" else None,
        "after": None if op == "d" else row,
        "op": op,
        "source": {"commit_lsn": commit, "lsn": lsn},
    }
    return orjson.dumps({"schema": {}, "payload": envelope} if connect else envelope)


def _view(tmp_path: Path) -> TableView:
    view = TableView(KafkaSettings(), "shop.public.products", "id", tmp_path / "tables")
    view.open()
    return view


def test_the_newest_change_of_each_key_wins_across_chunks(tmp_path: Path) -> None:
    view = _view(tmp_path)
    try:
        view.apply(
            [
                _event("r", {"id": 1, "name": "lamp"}, 0, 0),
                _event("c", {"id": 2, "name": "desk"}, 10, 10),
                _event("u", {"id": 1, "name": "lamp v3"}, 30, 30),
                _event("u", {"id": 1, "name": "lamp v2"}, 20, 20),  # older, other partition
            ]
        )
        assert view.get(1) == {"id": 1, "name": "lamp v3"}
        assert view.get("2") == {"id": 2, "name": "desk"}  # keys compare as text
        view.apply([_event("u", {"id": 1, "name": "stale"}, 25, 25)])  # older than the store's
        assert view.get(1) == {"id": 1, "name": "lamp v3"}
        view.apply([_event("u", {"id": 2, "name": "desk v2"}, 40, 40, connect=True)])
        assert view.get(2) == {"id": 2, "name": "desk v2"}
        assert len(view) == 2
    finally:
        view.stop()


def test_a_delete_removes_the_row_and_blocks_older_changes(tmp_path: Path) -> None:
    view = _view(tmp_path)
    try:
        view.apply([_event("c", {"id": 7, "name": "chair"}, 5, 5)])
        view.apply([_event("d", {"id": 7}, 9, 9)])
        assert view.get(7) is None
        view.apply([_event("u", {"id": 7, "name": "late"}, 8, 8)])  # before the delete
        assert view.get(7) is None
        view.apply([_event("c", {"id": 7, "name": "chair again"}, 12, 12)])
        assert view.get(7) == {"id": 7, "name": "chair again"}
        assert len(view) == 1
    finally:
        view.stop()


def test_records_that_are_not_row_changes_are_skipped(tmp_path: Path) -> None:
    view = _view(tmp_path)
    try:
        view.apply(
            [
                None,  # a tombstone
                b"not json",
                b"[1, 2]",
                orjson.dumps({"op": "t", "source": {}}),  # a truncate
                _event("c", {"name": "no key"}, 1, 1),
                _event("c", {"id": 3, "name": "shelf"}, 2, 2),
            ]
        )
        assert view.get(3) == {"id": 3, "name": "shelf"}
        assert len(view) == 1
    finally:
        view.stop()


def test_the_store_is_removed_at_stop_and_a_dead_workers_at_start(tmp_path: Path) -> None:
    root = tmp_path / "tables"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    left = root / f"shop.public.products.abcd.{dead.stdout.strip()}"
    (left / "data").mkdir(parents=True)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        kept = root / f"shop.public.products.ef01.{alive.pid}"
        kept.mkdir(parents=True)
        view = _view(tmp_path)
        assert view.path.is_dir() and not left.exists() and kept.is_dir()
        view.apply([_event("c", {"id": 1, "name": "lamp"}, 1, 1)])
        view.stop()
        assert not view.path.exists()
    finally:
        alive.kill()
        alive.wait()
