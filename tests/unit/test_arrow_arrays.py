"""The Arrow arrays the S3 archive builds from buffers equal what ``pa.array`` builds."""

from __future__ import annotations

import pyarrow as pa
import pytest

from loaders.arrow import binary_array, int_array

VALUES = [b'{"op":"c"}', b"", "käse".encode(), b"\x00\x01", b"x" * 10_000]


def test_binary_equals_pa_array() -> None:
    assert binary_array(VALUES).equals(pa.array(VALUES, pa.binary()))


def test_nulls_and_empty() -> None:
    assert binary_array([b"k", None]).to_pylist() == [b"k", None]
    assert len(binary_array([])) == 0
    assert len(int_array([], pa.int32())) == 0


def test_ints_exact_at_their_limits() -> None:
    big = [0, 1, -1, 2**63 - 1, -(2**63)]
    assert int_array(big, pa.int64()).to_pylist() == big
    assert int_array([2**31 - 1, -(2**31)], pa.int32()).to_pylist() == [2**31 - 1, -(2**31)]
    with pytest.raises(OverflowError):
        int_array([2**31], pa.int32())
