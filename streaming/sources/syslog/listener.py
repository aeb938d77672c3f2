"""A syslog listener as a source: UDP datagrams and TCP streams into ``<prefix>.syslog.messages``.

Each message is parsed (`streaming.sources.syslog.parse`) and becomes an insert event of the
table ``syslog.messages`` in the same envelope every source writes — keyed by a unique message
id, its event time (``source.ts_ms``) the message's own timestamp — so stream processors,
transforms and loaders treat log lines like any captured row. Shapes, transforms and dead
letters go through the shared `Emitter`.

Delivery: UDP syslog is fire-and-forget by nature (a datagram lost before it reaches the
listener is lost); from the listener on, messages are produced with acks=all, and a TCP
connection is read only as fast as Kafka accepts (the producer's bounded queue blocks).
Stopping flushes Kafka before the sockets close. Servers bind where the source says
(``127.0.0.1`` by default).
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from sluiceway.connect import kafka_admin
from sluiceway.errors import ConfigError
from sluiceway.pipeline import Pipeline, SyslogSource
from sluiceway.settings import Settings
from streaming.events import ChangeEvent, ColumnSchema, TableSchema, topic_name
from streaming.kafka.producer import DeliveryTracker, EventProducer
from streaming.sources.base import Capture, CaptureStats
from streaming.sources.syslog.parse import Framer, parse

__all__ = ["SHAPE", "SyslogListener", "send_tcp", "send_udp"]

log = logging.getLogger(__name__)

SHAPE = TableSchema(
    "syslog",
    "messages",
    (
        ColumnSchema("id", "string", "text", key=True),
        ColumnSchema("timestamp", "timestamptz", "timestamptz"),
        ColumnSchema("received_at", "timestamptz", "timestamptz"),
        ColumnSchema("facility", "int16", "smallint"),
        ColumnSchema("severity", "int16", "smallint"),
        ColumnSchema("host", "string", "text"),
        ColumnSchema("app", "string", "text"),
        ColumnSchema("procid", "string", "text"),
        ColumnSchema("msgid", "string", "text"),
        ColumnSchema("structured_data", "string", "text"),
        ColumnSchema("message", "string", "text"),
        ColumnSchema("format", "string", "text"),
        ColumnSchema("peer", "string", "text"),
    ),
)


def _millis(iso: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


class SyslogListener(Capture):
    """Listens for syslog messages and produces them until `stop` is set."""

    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        *,
        on_stats: Callable[[CaptureStats], None] | None = None,
    ) -> None:
        if not isinstance(pipeline.source, SyslogSource):
            raise TypeError("SyslogListener needs a pipeline with source kind syslog")
        super().__init__(settings, pipeline, on_stats=on_stats)
        self.source: SyslogSource = pipeline.source
        self.topic = topic_name(pipeline.topic_prefix, SHAPE.schema, SHAPE.table)
        self.ready = threading.Event()  # set once the sockets listen
        self.addresses: dict[str, tuple[str, int]] = {}
        self._lock = threading.Lock()
        self._sequence = 0
        self._tracker = DeliveryTracker()
        self._producer: EventProducer | None = None

    @staticmethod
    def describe(source: dict[str, Any]) -> str:
        return f"message {source.get('lsn')} received"

    def run(self) -> None:
        """Listen until `stop` is set; Kafka is flushed before the sockets close."""
        servers: list[socketserver.BaseServer] = []
        try:
            self._producer = EventProducer(self.settings.kafka, self._tracker)
            self.emitter.attach(self._producer)
            self.emitter.admin = kafka_admin(self.settings.kafka)
            self.emitter.ensure_topics([self.topic])
            self.emitter.publish(SHAPE)
            servers = self._servers()
            for server in servers:
                threading.Thread(target=server.serve_forever, args=(0.2,), daemon=True).start()
            self.stats.phase = "streaming"
            self.ready.set()
            log.info("syslog listening on %s", self.addresses)
            while not self.stop.wait(0.5):
                self._producer.serve()
                self.stats.confirmed_lsn = self._tracker.confirmed()
                self._report()
        except BaseException as exc:
            self.error = exc
            self.stats.phase = "failed"
            raise
        finally:
            for server in servers:
                server.shutdown()
                server.server_close()
            if self._producer is not None:
                self._producer.flush(60)
        self.stats.phase = "stopped"
        self._report()

    def _servers(self) -> list[socketserver.BaseServer]:
        listener = self
        servers: list[socketserver.BaseServer] = []

        class Datagrams(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data = self.request[0]
                listener.receive(data, self.client_address[0])

        class Stream(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                framer = Framer()
                while not listener.stop.is_set():
                    chunk = self.request.recv(65_536)
                    if not chunk:
                        break
                    for message in framer.feed(chunk):
                        listener.receive(message, self.client_address[0])
                rest = framer.rest()
                if rest is not None:
                    listener.receive(rest, self.client_address[0])

        class UDPServer(socketserver.ThreadingUDPServer):
            allow_reuse_address = True
            max_packet_size = self.source.max_message_bytes

        class TCPServer(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        try:
            if self.source.udp_port is not None:
                udp = UDPServer((self.source.host, self.source.udp_port), Datagrams)
                servers.append(udp)
                self.addresses["udp"] = udp.server_address[:2]  # type: ignore[assignment]
            if self.source.tcp_port is not None:
                tcp = TCPServer((self.source.host, self.source.tcp_port), Stream)
                servers.append(tcp)
                self.addresses["tcp"] = tcp.server_address[:2]  # type: ignore[assignment]
        except OSError as exc:
            for server in servers:
                server.server_close()
            raise ConfigError(
                f"syslog: cannot listen on {self.source.host} (udp {self.source.udp_port}, "
                f"tcp {self.source.tcp_port}): {exc}; change the source's ports"
            ) from exc
        return servers

    def receive(self, data: bytes, peer: str) -> None:
        """One raw message: parse it and produce its event (thread-safe)."""
        row = parse(data[: self.source.max_message_bytes], peer)
        with self._lock:
            self._sequence += 1
            sequence = self._sequence
        row["id"] = f"{time.time_ns():x}-{uuid.uuid4().hex[:8]}"
        ts_ms = _millis(row["timestamp"])
        source = {
            "version": "sluiceway-0.1",
            "connector": "syslog",
            "name": self.pipeline.topic_prefix,
            "ts_ms": ts_ms,
            "snapshot": "false",
            "db": "syslog",
            "schema": SHAPE.schema,
            "table": SHAPE.table,
            "commit_lsn": time.time_ns() // 1000,
            "lsn": sequence,
            "schema_id": SHAPE.id,
        }
        event = ChangeEvent(self.topic, {"id": row["id"]}, "c", None, row, source, ts_ms)
        assert self._producer is not None
        with self._lock:  # one producer, one tracker: sends are serialised
            batch = self._tracker.open()
            self.emitter.send(batch, event, SHAPE)
            self._tracker.seal(batch, sequence)
            self.stats.events += 1
            self.stats.transactions += 1
            self.stats.last_commit_ms = int(time.time() * 1000)


def send_udp(message: str | bytes, address: tuple[str, int]) -> None:
    """Send one datagram (for tests and examples)."""
    data = message.encode() if isinstance(message, str) else message
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(data, address)


def send_tcp(messages: list[str], address: tuple[str, int], octet_counting: bool = True) -> None:
    """Send messages over one TCP connection (octet-counted or newline-delimited)."""
    frames: list[bytes] = []
    for message in messages:
        data = message.encode()
        frames.append(f"{len(data)} ".encode() + data if octet_counting else data + b"\n")
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(b"".join(frames))
