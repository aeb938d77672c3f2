"""A headless browser for the UI tests: Debian's chromium, installed with apt if missing.

Playwright drives it (``executable_path``), so no browser download from elsewhere is needed.

    python -m stack.browser        # prints the path, installing chromium first if need be
"""

from __future__ import annotations

import shutil

from stack.manager import _apt_install

__all__ = ["chromium"]


def chromium() -> str:
    """The chromium binary, installed with apt if it is not there."""
    found = shutil.which("chromium")
    if found is None:
        _apt_install(["chromium"])
        found = shutil.which("chromium")
    if found is None:
        raise SystemExit("chromium is not installed and apt-get did not install it")
    return found


if __name__ == "__main__":
    print(chromium())
