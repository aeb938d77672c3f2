"""The loader's write thread: in order, errors re-raised, batches prepared ahead, interpreter
restored."""

from __future__ import annotations

import gc
import sys
import threading

import pytest

from loaders.base import LoadBatch
from loaders.runner import GC_YOUNG, SWITCH_INTERVAL, _Writer, interpreter_tuned
from sluiceway.errors import SinkFatal


def test_batches_are_written_in_order_off_the_calling_thread() -> None:
    written: list[tuple[str, str]] = []
    writer = _Writer(lambda b: written.append((b.group, threading.current_thread().name)))
    batches = [LoadBatch(f"b{i}") for i in range(3)]
    assert writer.submit(batches[0]) == []
    assert writer.submit(batches[1]) == [batches[0]]  # the one whose write completed
    assert writer.submit(batches[2]) == [batches[1]]
    assert writer.wait() == [batches[2]]
    writer.close()
    assert [g for g, _ in written] == ["b0", "b1", "b2"]
    assert all(name.startswith("sluiceway-load") for _, name in written)


def test_a_batch_is_prepared_while_the_one_before_is_written() -> None:
    events: list[str] = []
    writing = threading.Event()
    prepared_meanwhile = threading.Event()

    def prepare(batch: LoadBatch) -> None:
        events.append(f"prepare {batch.group}")
        if batch.group == "b1" and writing.wait(5):
            prepared_meanwhile.set()

    def write(batch: LoadBatch) -> None:
        events.append(f"write {batch.group}")
        if batch.group == "b0":
            writing.set()
            assert prepared_meanwhile.wait(5), "b1 was not prepared while b0 was written"

    writer = _Writer(write, prepare)
    batches = [LoadBatch(f"b{i}") for i in range(3)]
    assert writer.submit(batches[0]) == []
    assert writer.submit(batches[1]) == []  # two may wait: one written, one prepared
    assert writer.submit(batches[2]) == [batches[0]]
    assert writer.wait() == batches[1:]
    writer.close()
    for i in range(3):  # each batch is prepared before it is written
        assert events.index(f"prepare b{i}") < events.index(f"write b{i}")
    assert [e for e in events if e.startswith("write")] == ["write b0", "write b1", "write b2"]


def test_a_failed_write_is_raised_and_nothing_after_it_is_written() -> None:
    written: list[str] = []

    def write(batch: LoadBatch) -> None:
        if batch.group == "b0":
            raise RuntimeError("target refused b0")
        written.append(batch.group)

    writer = _Writer(write, lambda b: None)
    writer.submit(LoadBatch("b0"))
    writer.submit(LoadBatch("b1"))
    with pytest.raises(RuntimeError, match="target refused b0"):
        writer.submit(LoadBatch("b2"))
    with pytest.raises(SinkFatal, match="earlier batch failed"):
        writer.wait()  # b1: never written, so its offsets are never committed
    writer.close()
    assert written == []


def test_a_failed_preparation_leaves_the_work_to_the_write() -> None:
    written: list[str] = []

    def prepare(batch: LoadBatch) -> None:
        raise ValueError("cannot prepare")

    writer = _Writer(lambda b: written.append(b.group), prepare)
    writer.submit(LoadBatch("b0"))
    assert [b.group for b in writer.wait()] == ["b0"]
    writer.close()
    assert written == ["b0"]


def test_the_interpreter_is_tuned_while_any_loader_runs_and_restored_after_the_last() -> None:
    interval, threshold = sys.getswitchinterval(), gc.get_threshold()
    assert interval > SWITCH_INTERVAL and threshold[0] < GC_YOUNG  # the defaults
    first = _Writer(lambda b: None)
    with interpreter_tuned():
        second = _Writer(lambda b: None, lambda b: None)
        first.close()  # stops before the others: they still run tuned
        first.close()  # closing twice changes nothing
        assert sys.getswitchinterval() == SWITCH_INTERVAL
        assert gc.get_threshold() == (GC_YOUNG, *threshold[1:])
        second.close()
        assert gc.get_threshold()[0] == GC_YOUNG
    assert (sys.getswitchinterval(), gc.get_threshold()) == (interval, threshold)
