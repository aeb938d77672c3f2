"""Workers of one pipeline starting together share its Quix state directory."""

from __future__ import annotations

import threading
from pathlib import Path

from quixstreams.state.manager import StateStoreManager

from sluiceway.pipeline import Pipeline
from sluiceway.settings import Settings, load_settings
from streaming.processors.app import state_directory

GROUP = "sluiceway.shop.proc"


def _start(
    settings: Settings,
    pipeline: Pipeline,
    barrier: threading.Barrier,
    failures: list[BaseException],
) -> None:
    """What a starting worker does with its state directory."""
    manager = StateStoreManager(
        group_id=GROUP, state_dir=state_directory(settings, pipeline, GROUP)
    )
    barrier.wait()
    try:
        manager.init()
    except BaseException as exc:  # noqa: BLE001 - collected for the assertion
        failures.append(exc)


def test_two_workers_starting_together_both_open_the_state_directory(tmp_path: Path) -> None:
    """Quix checks for the group's directory, then makes it without exist_ok: two workers
    racing there failed one in three times (FileExistsError). Made first, it cannot."""
    pipeline = Pipeline(name="shop", source={"kind": "postgres"})
    failures: list[BaseException] = []
    for round_ in range(100):
        settings = load_settings(state_dir=tmp_path / str(round_))
        barrier = threading.Barrier(2)
        threads = [
            threading.Thread(target=_start, args=(settings, pipeline, barrier, failures))
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert (settings.state_dir / "processing" / "shop" / GROUP).is_dir()
    assert failures == []
