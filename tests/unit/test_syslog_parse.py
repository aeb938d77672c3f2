"""Syslog parsing: RFC 5424, RFC 3164, and TCP framing."""

from __future__ import annotations

from datetime import UTC, datetime

from streaming.sources.syslog.parse import Framer, parse

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_rfc5424_with_structured_data_and_a_bom() -> None:
    row = parse(
        b'<34>1 2026-11-25T10:01:02.5+01:00 gate sshd 4242 ID47 [ex@1 a="x\\]y"] '
        b"\xef\xbb\xbfFailed password for root from 203.0.113.9 port 22 ssh2",
        "10.0.0.1",
        NOW,
    )
    assert (row["facility"], row["severity"], row["format"]) == (4, 2, "rfc5424")
    assert row["timestamp"] == "2026-11-25T09:01:02.500000Z"
    assert (row["host"], row["app"], row["procid"], row["msgid"]) == (
        "gate",
        "sshd",
        "4242",
        "ID47",
    )
    assert row["structured_data"] == '[ex@1 a="x\\]y"]'
    assert row["message"] == "Failed password for root from 203.0.113.9 port 22 ssh2"
    nil = parse(b"<13>1 - - - - - -", "p", NOW)
    assert (
        nil["host"] is None and nil["message"] == "" and nil["timestamp"] == "2026-11-25T12:00:00Z"
    )


def test_rfc3164_and_its_missing_year() -> None:
    row = parse(b"<38>Nov 25 10:01:05 gate sshd[811]: Failed password for x", "p", NOW)
    assert (row["format"], row["host"], row["app"], row["procid"]) == (
        "rfc3164",
        "gate",
        "sshd",
        "811",
    )
    assert row["timestamp"] == "2026-11-25T10:01:05Z" and row["message"] == "Failed password for x"
    january = datetime(2027, 1, 2, tzinfo=UTC)
    assert parse(b"<38>Dec 31 23:59:59 h app: m", "p", january)["timestamp"].startswith(
        "2026-12-31"
    )
    bare = parse(b"just some text", "p", NOW)
    assert (bare["facility"], bare["severity"], bare["message"]) == (1, 5, "just some text")


def test_tcp_framing_octet_counted_and_newline_delimited() -> None:
    first = b"<13>1 - - - - - - one\nline"  # a newline inside a counted frame is content
    framer = Framer()
    counted = str(len(first)).encode() + b" " + first
    assert framer.feed(counted[:10]) == []  # incomplete
    assert framer.feed(counted[10:] + b"<13>plain one\n<13>plain") == [first, b"<13>plain one"]
    assert framer.feed(b" two\n\n") == [b"<13>plain two"]
    assert framer.feed(b"<13>no newline at close") == []
    assert framer.rest() == b"<13>no newline at close"
