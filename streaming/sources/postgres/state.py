"""What capture remembers between runs: whether its slot's initial snapshot completed.

The slot records the stream position; it cannot say whether the snapshot taken at its creation
finished. A capture killed mid-snapshot leaves a slot whose stream would start after rows that
were never sent, so `PostgresCapture` writes ``snapshot_done: false`` before reading and
``true`` once Kafka acknowledged every row; on restart, a slot whose snapshot is not done keeps
its position and the tables are read again before streaming resumes from it (rows already sent
are sent again: at least once, never lost, and no stale row is left behind).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from streaming.sources.statefile import load_state, save_state

__all__ = ["CaptureState"]


@dataclass
class CaptureState:
    """Per pipeline: the slot, where it started, and whether its snapshot is complete."""

    slot: str
    consistent_point: int = 0
    snapshot_done: bool = False
    # An incremental snapshot under way: {"id", "tables", "last_key"} as last confirmed.
    incremental: dict[str, Any] | None = None
    # The ids of the last incremental snapshot requests completed (confirmed in Kafka).
    completed: list[str] = field(default_factory=list)

    @staticmethod
    def path(state_dir: Path, pipeline: str) -> Path:
        """Where a pipeline's capture state lives."""
        return state_dir / "capture" / f"{pipeline}.json"

    @classmethod
    def load(cls, path: Path) -> CaptureState | None:
        """The saved state, or None if there is none."""
        data = load_state(path)
        return None if data is None else cls(**data)

    def save(self, path: Path) -> None:
        """Write atomically: a crash leaves the old file or the new one, never half of one."""
        save_state(path, asdict(self))
