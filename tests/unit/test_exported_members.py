"""Every name a module exports in __all__ exists (httpx guards its surface the same way)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

PACKAGES = ["sluiceway", "stack", "streaming", "loaders", "orchestration", "migrations", "bench"]


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        module = importlib.import_module(package)
        names.append(package)
        for info in pkgutil.walk_packages(module.__path__, prefix=f"{package}."):
            names.append(info.name)
    return names


@pytest.mark.parametrize("name", _modules())
def test_all_names_exist(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    missing = [member for member in exported if not hasattr(module, member)]
    assert not missing, f"{name}.__all__ names missing members {missing}"
