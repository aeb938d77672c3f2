"""What capture remembers between runs: whether its slot's initial snapshot completed.

The slot records the stream position; it cannot say whether the snapshot taken at its creation
finished. A capture killed mid-snapshot leaves a slot whose stream would start after rows that
were never sent, so `PostgresCapture` writes ``snapshot_done: false`` before reading and
``true`` once Kafka acknowledged every row; on restart, a slot whose snapshot is not done keeps
its position and the tables are read again before streaming resumes from it (rows already sent
are sent again: at least once, never lost, and no stale row is left behind). Files are
replaced atomically (write, fsync, rename).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None

    def save(self, path: Path) -> None:
        """Write atomically: a crash leaves the old file or the new one, never half of one."""
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        with temporary.open("w") as handle:
            json.dump(asdict(self), handle)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(path)
