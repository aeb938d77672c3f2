"""Syslog messages (RFC 5424 and RFC 3164) into rows, and TCP framing (RFC 6587).

Written here: the Python syslog parsers on PyPI are unmaintained or server frameworks of their
own; the two formats are a few regular expressions. Rules followed:

- RFC 5424: ``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD...] MSG``, ``-`` for nil,
  timestamps with a zone (converted to UTC), a UTF-8 BOM before MSG dropped;
- RFC 3164 (BSD): ``<PRI>Mmm dd hh:mm:ss HOSTNAME TAG[PID]: MSG``. The timestamp has no year
  and no zone: it is taken as UTC in the current year, or the previous one if that would put it
  more than a day in the future (a December message read in January). A message without a
  recognisable header keeps all of its text as the message;
- ``PRI`` is facility * 8 + severity; a message with no PRI gets 13 (user.notice), as RFC
  3164 asks a relay to assume;
- TCP: octet counting (``<length> <message>``) or newline-delimited, detected per frame.
"""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["Framer", "parse"]

_PRI = re.compile(rb"^<(\d{1,3})>")
_RFC5424 = re.compile(
    r"^1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) (?P<msgid>\S+) "
    r"(?P<sd>-|(?:\[(?:[^\]\\]|\\.)*\])+)(?: (?P<msg>.*))?$",
    re.DOTALL,
)
_RFC3164 = re.compile(
    r"^(?P<ts>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) (?P<host>\S+) "
    r"(?:(?P<tag>[^:\[\s]+)(?:\[(?P<pid>[^\]]*)\])?: ?)?(?P<msg>.*)$",
    re.DOTALL,
)
_MONTHS = {
    m: i
    for i, m in enumerate(
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], 1
    )
}


def _nil(value: str | None) -> str | None:
    return None if value in (None, "-") else value


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


def _bsd_time(text: str, now: datetime) -> datetime:
    month = _MONTHS[text[:3]]
    day, clock = int(text[4:6]), text[7:]
    hour, minute, second = (int(p) for p in clock.split(":"))
    moment = datetime(now.year, month, day, hour, minute, second, tzinfo=UTC)
    if moment > now + timedelta(days=1):
        moment = moment.replace(year=now.year - 1)
    return moment


def parse(data: bytes, peer: str, now: datetime | None = None) -> dict[str, Any]:
    """One syslog message as a row (fields of the ``syslog.messages`` table)."""
    now = now or datetime.now(UTC)
    data = data.rstrip(b"\r\n\x00")
    pri = 13
    found = _PRI.match(data)
    if found is not None:
        pri = min(int(found.group(1)), 191)
        data = data[found.end() :]
    text = data.decode("utf-8", "replace")
    row: dict[str, Any] = {
        "facility": pri // 8,
        "severity": pri % 8,
        "timestamp": _iso(now),
        "host": None,
        "app": None,
        "procid": None,
        "msgid": None,
        "structured_data": None,
        "message": text,
        "format": "unknown",
        "peer": peer,
        "received_at": _iso(now),
    }
    modern = _RFC5424.match(text)
    if modern is not None:
        stamp = _nil(modern["ts"])
        if stamp is not None:
            with contextlib.suppress(ValueError):  # an unreadable timestamp: received time
                row["timestamp"] = _iso(datetime.fromisoformat(stamp.replace("Z", "+00:00")))
        message = modern["msg"] or ""
        row.update(
            host=_nil(modern["host"]),
            app=_nil(modern["app"]),
            procid=_nil(modern["procid"]),
            msgid=_nil(modern["msgid"]),
            structured_data=_nil(modern["sd"]),
            message=message.removeprefix("\ufeff"),
            format="rfc5424",
        )
        return row
    legacy = _RFC3164.match(text)
    if legacy is not None:
        try:
            row["timestamp"] = _iso(_bsd_time(legacy["ts"], now))
        except (KeyError, ValueError):
            return row
        row.update(
            host=legacy["host"],
            app=legacy["tag"],
            procid=legacy["pid"],
            message=legacy["msg"],
            format="rfc3164",
        )
    return row


class Framer:
    """Splits a TCP byte stream into messages: octet counting or newline-delimited."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        """The complete messages in what has arrived so far."""
        self._buffer += data
        messages = []
        while self._buffer:
            counted = re.match(rb"^(\d{1,9}) ", self._buffer)
            if counted is not None:
                length = int(counted.group(1))
                end = counted.end() + length
                if len(self._buffer) < end:
                    break
                messages.append(self._buffer[counted.end() : end])
                self._buffer = self._buffer[end:]
                continue
            newline = self._buffer.find(b"\n")
            if newline < 0:
                break
            line = self._buffer[:newline]
            self._buffer = self._buffer[newline + 1 :]
            if line.strip():
                messages.append(line)
        return messages

    def rest(self) -> bytes | None:
        """What is left when the connection closes (a last message without a newline)."""
        rest, self._buffer = self._buffer.strip(), b""
        return rest or None
