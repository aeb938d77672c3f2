"""The syslog example end to end: real datagrams and TCP streams to the listener, the SSH
brute-force processors on the real Kafka, an alert at the tenth failed login and not the ninth."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from sluiceway.pipeline import Pipeline, load_pipeline
from sluiceway.settings import Settings
from stack.manager import Stack
from streaming.sources.syslog.listener import SyslogListener, send_tcp, send_udp
from tests.integration.capture_support import capture_running, read_topic
from tests.integration.conftest import require
from tests.integration.test_processing import _committed, _latest, _processing

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

EXAMPLE = Path(__file__).resolve().parents[2] / "pipelines" / "examples" / "syslog.yaml"
ATTACKER = "198.51.100.7"  # ten failures: alerted
PROBER = "203.0.113.9"  # nine failures: not alerted


def example(unique: str) -> Pipeline:
    spec = load_pipeline(EXAMPLE)
    return spec.model_copy(
        update={
            "name": unique,
            "topics": spec.topics.model_copy(update={"prefix": unique}),
            "source": spec.source.model_copy(update={"udp_port": 0, "tcp_port": 0}),
        }
    )


def failed(ip: str, second: int, modern: bool) -> str:
    text = f"Failed password for invalid user admin from {ip} port {40000 + second} ssh2"
    if modern:
        return f"<38>1 2026-11-25T10:01:{second:02d}.000Z bastion sshd 811 - - {text}"
    return f"<38>Nov 25 10:01:{second:02d} bastion sshd[811]: {text}"


def test_ssh_bruteforce_alert_fires_at_ten_attempts_not_nine(
    settings: Settings, stack: Stack, unique: str
) -> None:
    require(stack, "kafka")
    pipeline = example(unique)
    with capture_running(settings, pipeline) as listener:
        assert isinstance(listener, SyslogListener)
        assert listener.ready.wait(30), listener.error
        udp, tcp = listener.addresses["udp"], listener.addresses["tcp"]
        # The attacker: five over TCP (RFC 5424, octet-counted), five by UDP (RFC 3164).
        send_tcp([failed(ATTACKER, s, modern=True) for s in range(5)], tcp)
        for second in range(5, 10):
            send_udp(failed(ATTACKER, second, modern=False), udp)
        # The prober: nine by UDP, newline-delimited TCP noise, and lines that must not count.
        for second in range(9):
            send_udp(failed(PROBER, 20 + second, modern=second % 2 == 0), udp)
        send_tcp(
            [
                f"<38>Nov 25 10:02:00 bastion sshd[811]: Accepted password for ops from "
                f"{PROBER} port 50000 ssh2",
                f"<14>Nov 25 10:02:01 bastion web[9]: Failed password from {PROBER} port 1 x",
                "<38>1 2026-11-25T10:02:02Z bastion sshd 811 - - Connection closed",
            ],
            tcp,
            octet_counting=False,
        )
        messages = f"{unique}.syslog.messages"
        deadline = time.monotonic() + 30
        while listener.stats.events < 22:
            assert time.monotonic() < deadline, f"{listener.stats.events} messages of 22"
            time.sleep(0.1)
        with _processing(settings, pipeline) as processing:
            deadline = time.monotonic() + 120
            while processing.stats.events_in < 22:
                assert time.monotonic() < deadline, processing.stats
                time.sleep(0.2)
            # Outputs are committed with the processor's checkpoint transactions; on a broker
            # that has just started, the first ones can take longer than one quiet read.
            deadline = time.monotonic() + 90
            while True:
                alerts = _committed(settings, f"{unique}.enriched.ssh_bruteforce_alerts")
                counts = _latest(_committed(settings, f"{unique}.enriched.ssh_failures_per_ip"))
                if (alerts and len(counts) >= 2) or time.monotonic() > deadline:
                    break
    rows = [orjson.loads(v) for _k, v in read_topic(settings, messages) if v]
    assert len(rows) == 22
    formats = {r["after"]["format"] for r in rows}
    assert formats == {"rfc5424", "rfc3164"}
    per_ip = {
        envelope["after"]["source_ip"]: envelope["after"]["attempts"]
        for envelope in counts.values()
    }
    assert per_ip == {ATTACKER: 10, PROBER: 9}
    assert len(alerts) == 1
    alert: dict[str, Any] = alerts[0][1]["after"]
    assert (alert["source_ip"], alert["attempts"]) == (ATTACKER, 10)
    # 10:01:00-10:01:09 fall in the five-minute window that starts at 10:00.
    assert (
        alert["window_start"] == int(datetime(2026, 11, 25, 10, 0, tzinfo=UTC).timestamp()) * 1000
    )
