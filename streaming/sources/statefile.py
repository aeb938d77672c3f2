"""Small JSON state files, replaced atomically (write, fsync, rename): a crash leaves the old
file or the new one, never half of one.

Some files have more than one writer (a migration's state is written by the copy process and by
a cutover run at the same time). Those writers change them under ``locked``: the file is read
afresh, changed and saved while an exclusive lock is held, so one writer never saves a stale copy
over another's change.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["load_state", "locked", "process_alive", "save_state"]


def load_state(path: Path) -> dict[str, Any] | None:
    """The saved mapping, or None if there is none."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return data if isinstance(data, dict) else None


def save_state(
    path: Path, data: dict[str, Any], default: Callable[[Any], Any] | None = None
) -> None:
    """Write ``data`` to ``path`` atomically (each writer through its own temporary file);
    ``default`` renders what JSON has no form for, as in `json.dump`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w") as handle:
            json.dump(data, handle, default=default)
            handle.flush()
            os.fsync(handle.fileno())
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (through a ``.lock`` file beside it) for a
    read-change-save; other processes and threads wait for it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.with_name(f"{path.name}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def process_alive(pid: int | None) -> bool:
    """Whether a process ``pid`` (as a state file or a directory name records it) still runs
    on this machine: what a state left by a killed process is told apart by."""
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it runs, as another user
    return True
