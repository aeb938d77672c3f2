"""Arrow arrays of a batch's records, built from their buffers.

The S3 target archives every record with its change (`loaders.s3`): a batch's keys, values,
offsets and partitions go to Arrow. ``pa.array`` on a Python list asks pandas whether the list
is array-like, and so imports pandas into a process that never uses it (~54 MiB resident).
It is also slower: 100k values and their offsets take ~43 ms through ``pa.array`` against
~11 ms here, time the loader's threads spend holding the GIL. Arrow's layout for these types
is simple (offsets and one data buffer, or one value buffer), so the arrays are built from
``b"".join`` and the standard library's ``array`` directly; Arrow keeps a reference to each
buffer, nothing is copied twice.
"""

from __future__ import annotations

import array
from collections.abc import Sequence
from itertools import accumulate

import pyarrow as pa

__all__ = ["binary_array", "int_array"]

_INT32_LIMIT = 2**31 - 1
_CODES = {pa.int32(): "i", pa.int64(): "q"}


def binary_array(values: Sequence[bytes | None]) -> pa.Array:
    """``values`` as one binary array (``large_binary`` past 2 GiB); a None is a null."""
    if any(v is None for v in values):  # rare (a key-less record): let Arrow build the bitmap
        return pa.array(values, pa.binary())
    data = b"".join(values)  # type: ignore[arg-type]  # no None, checked above
    large = len(data) > _INT32_LIMIT
    offsets = array.array("q" if large else "i", [0])
    offsets.extend(accumulate(map(len, values)))  # type: ignore[arg-type]
    return pa.Array.from_buffers(
        pa.large_binary() if large else pa.binary(),
        len(values),
        [None, pa.py_buffer(offsets), pa.py_buffer(data)],
    )


def int_array(values: Sequence[int], kind: pa.DataType) -> pa.Array:
    """``values`` as one ``int32`` or ``int64`` array, without nulls."""
    return pa.Array.from_buffers(
        kind, len(values), [None, pa.py_buffer(array.array(_CODES[kind], values))]
    )
