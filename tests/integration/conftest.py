"""Integration tests run against the real servers of the local stack (`sluiceway stack up`).

If a service is down, the test fails with the stack's own health detail: an integration test
that cannot reach its server has not passed.
"""

from __future__ import annotations

import uuid

import pytest

from sluiceway.settings import Settings, load_settings
from stack.manager import Stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Stack:
    return Stack(settings)


@pytest.fixture
def unique() -> str:
    """A name no other test uses: topics, tables, buckets and slots are per test."""
    return f"t{uuid.uuid4().hex[:12]}"


def require(stack: Stack, name: str) -> None:
    """Fail (not skip) with the health detail if ``name`` is not healthy."""
    ok, detail = stack.services[name].healthy()
    if not ok:
        pytest.fail(f"{name} is not healthy ({detail}); run `sluiceway stack up {name}`")
