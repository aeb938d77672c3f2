"""The retry loop every capture runs in: transient failures back off, terminal ones stop."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sluiceway.errors import SluicewayError, Transient

__all__ = ["run_with_retries"]

log = logging.getLogger(__name__)


def run_with_retries(stop: threading.Event, attempt: Callable[[], None], what: str) -> None:
    """Call ``attempt`` until it returns or ``stop`` is set; `Transient` errors are retried
    with backoff (1 s doubling to 30 s), anything else propagates."""
    delay = 1.0
    while not stop.is_set():
        try:
            attempt()
            return
        except SluicewayError as exc:
            if not isinstance(exc, Transient):
                raise
            log.warning("%s interrupted: %s; retrying in %.0fs", what, exc, delay)
            stop.wait(delay)
            delay = min(delay * 2, 30.0)
