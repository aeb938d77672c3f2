"""Table views of change topics: the current row of every key, for stream-table joins.

A `TableView` reads one change topic from the beginning in its own thread and keeps the newest
row per primary key (by source position; a delete removes the key). Processing starts only
once every view has read up to where its topic ended at start-up (bootstrap), so the first
events already meet the rows captured before them — the table is global (every partition in
every worker), so the event stream needs no re-keying to meet it. It is the "global table" of
Kafka Streams; the join is by processing time: an event meets the newest row read so far.

The rows live in a RocksDB store on disk (rocksdict, which Quix's own state uses), not in the
worker's memory: a Python dict of a 1M-row table of three columns took ~610 MiB, so a worker's
memory grew with the tables it joins. The store's memory is bounded (`CACHE_BYTES`, the write
buffers) whatever the table's size. It is scratch: rebuilt from the topic at every start, in a
directory of the worker's own (two workers on one host each keep theirs), removed at stop; a
killed worker's is removed by the next one to start on that host.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition
from rocksdict import BlockBasedOptions, Cache, Options, Rdict, WriteBatch, WriteOptions

from sluiceway.errors import KafkaUnavailable
from sluiceway.settings import KafkaSettings
from streaming.kafka.fetch import SHALLOW_FETCH
from streaming.sources.statefile import process_alive

__all__ = ["CACHE_BYTES", "TableView"]

CACHE_BYTES = 16 * 2**20
"""RocksDB's block cache per view; with two 8 MiB write buffers, what a view's rows may hold
in memory."""
WRITE_BUFFER_BYTES = 8 * 2**20

_NOWHERE = (-1, -1)


def _store_options() -> Options:
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_write_buffer_size(WRITE_BUFFER_BYTES)
    options.set_max_write_buffer_number(2)
    table = BlockBasedOptions()
    table.set_block_cache(Cache(CACHE_BYTES))
    table.set_bloom_filter(10, False)  # a missing key (a new row) costs no disk read
    options.set_block_based_table_factory(table)
    return options


def _sweep(root: Path) -> None:
    """Remove the stores of workers that no longer run (their directory names end in
    ``.<pid>``): a killed worker cannot remove its own."""
    if not root.is_dir():
        return
    for path in root.iterdir():
        pid = path.name.rsplit(".", 1)[-1]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


class TableView:
    """The current rows of one change topic, keyed by a primary-key column's value, in a
    scratch RocksDB store under ``directory`` (module docstring)."""

    def __init__(self, kafka: KafkaSettings, topic: str, key: str, directory: Path) -> None:
        self.topic = topic
        self.key = key
        self.root = directory
        self.path = directory / f"{topic}.{uuid.uuid4().hex[:8]}.{os.getpid()}"
        self._db: Rdict | None = None
        self._kafka = kafka
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"table {topic}", daemon=True)

    def get(self, value: Any) -> dict[str, Any] | None:
        """The current row whose key column is ``value`` (compared as text), if any."""
        assert self._db is not None, "start the view first"
        stored = self._db.get(str(value).encode())
        if stored is None:
            return None
        row: dict[str, Any] | None = orjson.loads(stored)[2]
        return row

    def __len__(self) -> int:
        """Rows held (deleted keys not counted); reads the whole store."""
        assert self._db is not None, "start the view first"
        return sum(1 for v in self._db.values() if not v.endswith(b",null]"))

    def start(self, timeout: float = 300.0) -> None:
        """Open the store and start reading; return once the view holds everything the topic
        held at start.

        Raises:
            KafkaUnavailable: it did not catch up in ``timeout`` seconds.
        """
        self.open()
        self._thread.start()
        if not self._ready.wait(timeout):
            raise KafkaUnavailable(f"table view of {self.topic} not loaded in {timeout:.0f} s")

    def open(self) -> None:
        """Make the view's empty store (`start` does), removing those of dead workers."""
        _sweep(self.root)
        self.path.mkdir(parents=True)
        self._db = Rdict(str(self.path), _store_options())
        writes = WriteOptions()
        # Scratch: rebuilt from the topic, never recovered. (A property at run time; the
        # package's stub declares a method.)
        writes.disable_wal = True  # type: ignore[method-assign, assignment]
        self._db.set_write_options(writes)

    def stop(self) -> None:
        """Stop reading, close the store and remove it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        if self._db is not None and not self._thread.is_alive():
            self._db.close()
            self._db = None
            shutil.rmtree(self.path, ignore_errors=True)

    def _change(self, value: bytes | None) -> tuple[bytes, tuple[int, int], Any] | None:
        """(key, source position, row or None for a delete) of one change event; None if
        the record is not a change of a row with the key column."""
        if value is None:
            return None
        envelope = orjson.loads(value)
        envelope = envelope.get("payload", envelope) if "payload" in envelope else envelope
        op = envelope.get("op")
        if op not in ("c", "u", "r", "d"):
            return None
        row = envelope["before"] if op == "d" else envelope["after"]
        if not isinstance(row, dict) or self.key not in row:
            return None
        source = envelope.get("source") or {}
        position = (int(source.get("commit_lsn") or 0), int(source.get("lsn") or 0))
        return str(row[self.key]).encode(), position, None if op == "d" else row

    def apply(self, values: list[bytes | None]) -> None:
        """Apply one consumed chunk in one write: per key the newest change wins, older
        changes (from another partition) are dropped, a delete keeps its position."""
        assert self._db is not None
        newest: dict[bytes, tuple[tuple[int, int], Any]] = {}
        for value in values:
            try:
                change = self._change(value)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                continue  # not an event: the event stream's dead-letter path names such
            if change is None:
                continue
            key, position, row = change
            held = newest.get(key)
            if held is None:
                stored = self._db.get(key)
                held_at = _NOWHERE if stored is None else tuple(orjson.loads(stored)[:2])
            else:
                held_at = held[0]
            if position < held_at:
                continue
            newest[key] = (position, row)
        if newest:
            batch = WriteBatch(raw_mode=True)
            for key, (position, row) in newest.items():
                batch.put(key, orjson.dumps([position[0], position[1], row]))
            self._db.write(batch)

    def _run(self) -> None:
        consumer = Consumer(
            {
                **self._kafka.client_config(),
                **SHALLOW_FETCH,  # a table of any size is read with little held in memory
                "group.id": f"sluiceway-table-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        try:
            metadata = consumer.list_topics(self.topic, timeout=10).topics[self.topic]
            partitions = [TopicPartition(self.topic, p, 0) for p in metadata.partitions]
            ends = {
                p.partition: consumer.get_watermark_offsets(p, timeout=10)[1] for p in partitions
            }
            consumer.assign(partitions)
            pending = {p for p, end in ends.items() if end > 0}
            if not pending:
                self._ready.set()
            while not self._stop.is_set():
                messages = [m for m in consumer.consume(10_000, timeout=0.5) if m.error() is None]
                self.apply([m.value() for m in messages])
                for msg in messages:
                    if msg.partition() in pending and msg.offset() + 1 >= ends[msg.partition()]:
                        pending.discard(msg.partition())
                        if not pending:
                            self._ready.set()
                if not pending and not self._ready.is_set():
                    self._ready.set()
        finally:
            consumer.close()
            time.sleep(0)
