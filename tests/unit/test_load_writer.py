"""The loader's write thread: in order, one in flight, errors re-raised, interpreter restored."""

from __future__ import annotations

import gc
import sys
import threading

import pytest

from loaders.base import LoadBatch
from loaders.runner import GC_YOUNG, SWITCH_INTERVAL, _Writer, interpreter_tuned


def test_batches_are_written_in_order_off_the_calling_thread() -> None:
    written: list[tuple[str, str]] = []
    writer = _Writer(lambda b: written.append((b.group, threading.current_thread().name)))
    batches = [LoadBatch(f"b{i}") for i in range(3)]
    assert writer.submit(batches[0]) is None
    assert writer.submit(batches[1]) is batches[0]  # the one whose write completed
    assert writer.submit(batches[2]) is batches[1]
    assert writer.wait() is batches[2]
    writer.close()
    assert [g for g, _ in written] == ["b0", "b1", "b2"]
    assert all(name.startswith("sluiceway-load") for _, name in written)


def test_a_failed_write_is_raised_to_the_reader() -> None:
    def fail(batch: LoadBatch) -> None:
        raise RuntimeError(f"target refused {batch.group}")

    writer = _Writer(fail)
    writer.submit(LoadBatch("b0"))
    with pytest.raises(RuntimeError, match="target refused b0"):
        writer.wait()
    writer.close()


def test_the_interpreter_is_tuned_while_any_loader_runs_and_restored_after_the_last() -> None:
    interval, threshold = sys.getswitchinterval(), gc.get_threshold()
    assert interval > SWITCH_INTERVAL and threshold[0] < GC_YOUNG  # the defaults
    first = _Writer(lambda b: None)
    with interpreter_tuned():
        second = _Writer(lambda b: None)
        first.close()  # stops before the others: they still run tuned
        first.close()  # closing twice changes nothing
        assert sys.getswitchinterval() == SWITCH_INTERVAL
        assert gc.get_threshold() == (GC_YOUNG, *threshold[1:])
        second.close()
        assert gc.get_threshold()[0] == GC_YOUNG
    assert (sys.getswitchinterval(), gc.get_threshold()) == (interval, threshold)
