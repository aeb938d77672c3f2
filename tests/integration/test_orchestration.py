"""The Dagster definitions run against the real stack."""

from __future__ import annotations

import pytest

from orchestration.definitions import defs

pytestmark = pytest.mark.integration


def test_stack_health_job_succeeds_on_the_running_stack() -> None:
    result = defs.resolve_job_def("stack_health").execute_in_process()
    assert result.success
