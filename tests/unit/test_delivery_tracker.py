"""Positions are confirmed only when Kafka acknowledged everything up to them."""

from __future__ import annotations

from streaming.kafka.producer import DeliveryTracker


def test_confirms_in_commit_order_only() -> None:
    tracker = DeliveryTracker(start=5)
    first, second, third = tracker.open(), tracker.open(), tracker.open()
    for batch, events in ((first, 2), (second, 1), (third, 1)):
        batch.outstanding += events
    tracker.seal(first, 10)
    tracker.seal(second, 20)
    assert tracker.confirmed() == 5
    second.delivered(None, None)  # a later transaction acknowledged first
    assert tracker.confirmed() == 5
    first.delivered(None, None)
    assert tracker.confirmed() == 5  # one event of the first still in flight
    first.delivered(None, None)
    assert tracker.confirmed() == 20
    third.delivered(None, None)
    assert tracker.confirmed() == 20  # not sealed: the transaction may have more events
    tracker.seal(third, 30)
    assert tracker.confirmed() == 30
    assert tracker.in_flight() == 0


def test_empty_transactions_confirm_and_failures_stop_everything() -> None:
    tracker = DeliveryTracker()
    heartbeat = tracker.open()
    tracker.seal(heartbeat, 7)
    assert tracker.confirmed() == 7
    failing, later = tracker.open(), tracker.open()
    failing.outstanding += 1
    later.outstanding += 1
    tracker.seal(failing, 8)
    tracker.seal(later, 9)
    failing.delivered("broker said no", None)
    later.delivered(None, None)
    assert tracker.error == "broker said no"
    assert tracker.confirmed() == 7  # nothing after a failed delivery is ever confirmed
