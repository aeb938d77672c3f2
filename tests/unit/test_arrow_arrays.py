"""The loaders' Arrow arrays built from buffers equal what ``pa.array`` builds, and leave
pandas unimported."""

from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pytest

from loaders.arrow import binary_array, int_array, text_array

VALUES = [b'{"op":"c"}', b"", "käse".encode(), b"\x00\x01", b"x" * 10_000]


def test_binary_and_text_equal_pa_array() -> None:
    assert binary_array(VALUES).equals(pa.array(VALUES, pa.binary()))
    utf8 = [v for v in VALUES if v != b"\x00\x01"] + [b"\x00\x01"]
    assert text_array(utf8).to_pylist() == [v.decode() for v in utf8]
    assert text_array(utf8).type == pa.string()


def test_nulls_and_empty() -> None:
    assert binary_array([b"k", None]).to_pylist() == [b"k", None]
    assert len(binary_array([])) == 0 and len(text_array([])) == 0
    assert len(int_array([], pa.int32())) == 0


def test_text_refuses_bytes_that_are_not_utf8() -> None:
    with pytest.raises(pa.ArrowInvalid):
        text_array([b"ok", b"\xff\xfe"])


def test_ints_exact_at_their_limits() -> None:
    big = [0, 1, -1, 2**63 - 1, -(2**63)]
    assert int_array(big, pa.int64()).to_pylist() == big
    assert int_array([2**31 - 1, -(2**31)], pa.int32()).to_pylist() == [2**31 - 1, -(2**31)]
    with pytest.raises(OverflowError):
        int_array([2**31], pa.int32())


STAGE_A_BATCH = """
import sys
from tests.unit.test_staging import _batch, _event
from loaders.staging import Stager
stager = Stager()
count = stager.stage(_batch([_event("c", {"id": 1, "region": "eu", "v": "a"}, 1)]), latest=True)
print(count, "pandas" in sys.modules)
"""


def test_staging_a_batch_does_not_import_pandas() -> None:
    """The loader's own path from raw records to ``staged`` (pa.array on a list would pull
    pandas in: ~54 MiB of resident memory in a loader)."""
    out = subprocess.run(
        [sys.executable, "-c", STAGE_A_BATCH], capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["1", "False"]
