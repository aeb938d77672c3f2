"""What every capture shares: its statistics, its stop flag, its emitter, its retry loop.

Each source (`postgres`, `mysql`, `query`, `syslog`) captures differently; the surface the
CLI and the orchestrator drive is the same — ``run()``, ``stop``, ``stats``, ``error``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sluiceway.pipeline import Pipeline
from sluiceway.settings import Settings
from streaming.sources.emitter import Emitter
from streaming.sources.retry import run_with_retries

__all__ = ["Capture", "CaptureStats"]


@dataclass
class CaptureStats:
    """What a running capture reports: counts, position, lag and retained WAL."""

    phase: str = "starting"
    snapshot_rows: int = 0
    snapshot_estimate: int = 0
    snapshot_encoded_in_server: int = 0  # snapshot rows PostgreSQL encoded itself
    incremental_rows: int = 0
    events: int = 0
    transactions: int = 0
    confirmed_lsn: int = 0
    last_commit_ms: int = 0
    retained_wal_bytes: int = 0
    dead_letters: int = 0  # records sent to the dead-letter topic (errors.tolerance: all)
    started: float = field(default_factory=time.monotonic)

    def lag_ms(self) -> int:
        """Milliseconds from the last captured commit to now (0 when idle and caught up)."""
        return max(0, int(time.time() * 1000) - self.last_commit_ms) if self.last_commit_ms else 0


class Capture:
    """The shared part of a capture; subclasses implement `_run_once` (one connection's life:
    transient failures are retried with backoff around it)."""

    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        *,
        on_stats: Callable[[CaptureStats], None] | None = None,
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.stop = threading.Event()
        self.stats = CaptureStats()
        self._on_stats = on_stats
        self.error: BaseException | None = None  # why `run` ended, if it failed
        self.emitter = Emitter(settings, pipeline, None, self.describe)

    def run(self) -> None:
        """Capture until `stop` is set, retrying transient failures with backoff."""
        try:
            run_with_retries(self.stop, self._run_once, f"capture of {self.pipeline.name}")
        except BaseException as exc:
            self.error = exc
            self.stats.phase = "failed"
            raise

    def _run_once(self) -> None:
        raise NotImplementedError

    @staticmethod
    def describe(source: dict[str, Any]) -> str:
        """An event's source position as people read it (named in dead letters and errors)."""
        return str(source.get("lsn"))

    def _report(self) -> None:
        self.stats.dead_letters = self.emitter.dead_letters
        if self._on_stats is not None:
            self._on_stats(self.stats)
