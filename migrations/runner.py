"""The phases of a migration, each resumable and idempotent, with the state they leave.

- **prepare** creates the target database, schema and translated tables
  (`migrations.schema`); re-run, ``IF NOT EXISTS`` changes nothing;
- **copy + catch up** captures the source (consistent snapshot, then its log) into
  ``migrate_<name>.*`` topics and loads them continuously into the target tables,
  position-guarded; re-run, it resumes from the saved capture position and the offsets stored
  in the target;
- **verify** counts and checksums every table per key range and names the keys that differ
  (`migrations.verify`); read-only;
- **cutover** passes its gates (lag under ``gates.max_lag_seconds``, parity green, approval),
  fences the source (``read_only``), waits for the in-flight transactions, drains until the
  target applied the source's final binlog position, verifies exact parity there, sets the
  identity sequences past the highest ids, drops the bookkeeping, records the switch and runs
  the hook. Any failure after the fence lifts it again: the source stays the primary. The
  write-unavailable window (fence to switch) is measured and recorded.

Copying goes through Kafka like every pipeline — the same capture, the same loader — so the
copy, the catch-up and a later rollback are one mechanism. The state file
(``<state>/migrations/<name>.json``) records the phase, every verification and, later, the
fence and switch.
"""

from __future__ import annotations

import calendar
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.errors
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient
from psycopg2 import sql as pgsql

from loaders.base import POSITION, TableBatch
from loaders.parity import ParityReport
from loaders.postgres import PostgresSink
from loaders.postgres.sink import OFFSETS
from loaders.runner import Loader
from loaders.sql import q
from migrations.plan import MigrationPlan, record_primary
from migrations.reverse import Applier, MySQLApplier, PostgresApplier
from migrations.schema import script, translate
from migrations.verify import source_tables, verifier, verify
from sluiceway.connect import mariadb_connection, postgres_connection
from sluiceway.errors import SluicewayError
from sluiceway.pipeline import Pipeline, PostgresSource, TableSelection
from sluiceway.settings import Settings
from streaming.events import topic_name
from streaming.sources import capture_for
from streaming.sources.mysql.capture import BinlogPosition, encode_position
from streaming.sources.postgres.catalog import drop_slot, ensure_publication, slot_health
from streaming.sources.postgres.state import CaptureState
from streaming.sources.statefile import load_state, locked, save_state

__all__ = ["CutoverFailed", "CutoverRefused", "MigrationRunner", "MigrationState"]

log = logging.getLogger(__name__)


@dataclass
class MigrationState:
    """What a migration has done so far."""

    phase: str = "planned"  # planned, prepared, copying, cut over
    primary: str = "source"  # which database the applications write to
    verifications: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    cutover: dict[str, Any] | None = None  # position, fence/switch times, the window
    lag: list[dict[str, Any]] = field(default_factory=list)  # samples while copying

    @staticmethod
    def path(state_dir: Path, name: str) -> Path:
        return state_dir / "migrations" / f"{name}.json"

    @classmethod
    def load(cls, path: Path) -> MigrationState:
        data = load_state(path)
        return cls(**data) if data is not None else cls()

    def save(self, path: Path) -> None:
        save_state(path, asdict(self))

    def record(self, what: str, **details: Any) -> None:
        self.events.append(
            {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "what": what, **details}
        )


class TargetSink(PostgresSink):
    """The loader's PostgreSQL sink writing into the translated tables (source names)."""

    def __init__(self, settings: Settings, plan: MigrationPlan) -> None:
        super().__init__(settings.postgres, plan.target.database, plan.target.schema_name)
        self.plan = plan

    def table_name(self, batch: TableBatch, suffix: str = "") -> str:
        name = self.plan.target_table(batch.table[1]) + suffix
        return f"{q(self.schema)}.{q(name)}"


class MigrationRunner:
    """Runs one plan's phases."""

    def __init__(self, settings: Settings, plan: MigrationPlan) -> None:
        self.settings = settings
        self.plan = plan
        self.pipeline = plan.pipeline()
        self.state_path = MigrationState.path(settings.state_dir, plan.name)
        self.state = MigrationState.load(self.state_path)
        self.stop = threading.Event()
        self.capture: Any = None
        self.loader: Loader | None = None
        self.copy_running = threading.Event()  # set while `start` copies in this process
        self.group = f"sluiceway.migrate.{plan.name}"
        self.reverse_group = f"sluiceway.migrate.{plan.name}.reverse"
        self.side: _MySQLSide | _PostgresSide = (
            _MySQLSide(self) if plan.source.kind == "mysql" else _PostgresSide(self)
        )
        self.applier: Applier | None = None
        self.last_reports: list[ParityReport] = []
        self._verifying = threading.local()  # .executor: see `_verifier`

    @contextmanager
    def _changing(self) -> Iterator[MigrationState]:
        """The state read afresh, to change and save under the file's lock: the copy process and
        a cutover run write it at the same time, and neither may save a stale copy over the
        other's change (a lost "cut over" would make the next run cut over again)."""
        with locked(self.state_path):
            self.state = MigrationState.load(self.state_path)
            yield self.state
            self.state.save(self.state_path)

    def _record(self, what: str, **details: Any) -> None:
        """One event in the state's log (saved under the lock, as every change)."""
        with self._changing() as state:
            state.record(what, **details)

    def _reload(self) -> MigrationState:
        self.state = MigrationState.load(self.state_path)
        return self.state

    # --- plan and prepare ----------------------------------------------------------------------
    def ddl(self) -> str:
        """The reviewable DDL of the target schema."""
        return script(self.plan, source_tables(self.settings, self.plan))

    def prepare(self) -> list[str]:
        """Create the target database, schema and tables (idempotent); the tables created."""
        admin = postgres_connection(self.settings.postgres, database="postgres")
        admin.autocommit = True
        try:
            with admin.cursor() as cur:
                cur.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (self.plan.target.database,)
                )
                if cur.fetchone() is None:
                    cur.execute(
                        pgsql.SQL("CREATE DATABASE {}").format(
                            pgsql.Identifier(self.plan.target.database)
                        )
                    )
        finally:
            admin.close()
        tables = source_tables(self.settings, self.plan)
        conn = postgres_connection(self.settings.postgres, database=self.plan.target.database)
        try:
            with conn.cursor() as cur:
                cur.execute(f"CREATE SCHEMA IF NOT EXISTS {q(self.plan.target.schema_name)}")
                for table in tables:
                    for statement in translate(self.plan, table):
                        cur.execute(statement)
            conn.commit()
        except psycopg2.Error as exc:
            conn.rollback()
            raise SluicewayError(f"prepare of {self.plan.name}: {exc.pgerror or exc}") from exc
        finally:
            conn.close()
        with self._changing() as state:
            if state.phase == "planned":
                state.phase = "prepared"
            state.record("prepared", tables=[t.name for t in tables])
        return [t.name for t in tables]

    def run(self) -> None:
        """`start`, under the name every supervised worker has."""
        self.start()

    # --- copy and catch up ---------------------------------------------------------------------
    def reverse_pipeline(self) -> Pipeline:
        """Capture of the new primary (the target), for reverse replication after a cutover."""
        return Pipeline(
            name=f"migrate_{self.plan.name}_reverse",
            source=PostgresSource(
                database=self.plan.target.database,
                tables=TableSelection(include=[f"{self.plan.target.schema_name}.*"]),
                snapshot="never",
                heartbeat_seconds=0.5,
                status_seconds=0.2,
            ),
            topics={"partitions": 3},
        )

    def start(self, on_progress: Callable[[MigrationRunner], None] | None = None) -> None:
        """Until `stop` is set: before the cutover, copy and catch up (capture and load side by
        side); after it, reverse replication (the target's changes back to the old source)."""
        phase = self._reload().phase
        if phase == "rolled back":
            raise SluicewayError(f"{self.plan.name} was rolled back: the source is the primary")
        if phase == "cut over":
            self._run_workers(self._reverse_workers(), on_progress, until="rolled back")
            return
        if phase == "planned":
            self.prepare()
        with self._changing() as state:
            if state.phase in ("cut over", "rolled back"):  # switched meanwhile: start again
                raise SluicewayError(f"{self.plan.name} switched while starting; run start again")
            state.phase = "copying"
            state.record("copy started")
        self.capture = capture_for(self.settings, self.pipeline)
        sink = TargetSink(self.settings, self.plan)
        self.loader = Loader(
            self.settings,
            self.pipeline,
            sink,
            mode="current",
            group=self.group,
            batch_seconds=0.2,
        )
        try:
            self._run_workers([self.capture, self.loader], on_progress, until="cut over")
        finally:
            sink.close()

    def _reverse_workers(self) -> list[Any]:
        reverse = self.reverse_pipeline()
        self.capture = capture_for(self.settings, reverse)
        applier = MySQLApplier if self.plan.source.kind == "mysql" else PostgresApplier
        self.applier = applier(
            self.settings,
            self.plan,
            source_tables(self.settings, self.plan),
            reverse.topic_prefix,
            self.reverse_group,
            reverse.topics,
        )
        self._record("reverse replication started")
        return [self.capture, self.applier]

    def _run_workers(
        self,
        workers: list[Any],
        on_progress: Callable[[MigrationRunner], None] | None,
        until: str,
    ) -> None:
        """Run the workers in threads until `stop`, a worker's failure, or phase ``until``."""
        errors: list[BaseException] = []

        def run(worker: Any) -> None:
            try:
                worker.run()
            except BaseException as exc:  # noqa: BLE001 - surfaced below
                errors.append(exc)
                self.stop.set()

        threads = [threading.Thread(target=run, args=(w,), daemon=True) for w in workers]
        for thread in threads:
            thread.start()
        self.copy_running.set()
        next_sample = time.monotonic()
        next_verify = time.monotonic() + self.plan.verify_every_seconds
        try:
            while not self.stop.wait(0.5):
                if on_progress is not None:
                    on_progress(self)
                if time.monotonic() >= next_sample:
                    self._sample(workers)
                    next_sample = time.monotonic() + 5
                if until == "cut over" and time.monotonic() >= next_verify:
                    # Re-checked continuously while catching up (as the gate would, under load).
                    self._parity(rounds=2)
                    next_verify = time.monotonic() + self.plan.verify_every_seconds
                if MigrationState.load(self.state_path).phase == until:
                    break  # a cutover (or rollback) run elsewhere finished this work
        finally:
            for worker in workers:
                worker.stop.set()
            for thread in threads:
                thread.join(60)
            self.copy_running.clear()
        if errors:
            raise errors[0]

    def _sample(self, workers: list[Any]) -> None:
        """One lag sample for the report (capture's lag behind the source's commits)."""
        stats = getattr(workers[0], "stats", None)
        if stats is None or not hasattr(stats, "lag_ms"):
            return
        applied = getattr(workers[1].stats, "rows", getattr(workers[1].stats, "applied", 0))
        sample = {
            "at": _now(),
            "lag_ms": stats.lag_ms(),
            "captured": stats.events,
            "applied": applied,
        }
        with self._changing() as state:
            state.lag = [*state.lag, sample][-500:]

    # --- verify --------------------------------------------------------------------------------
    def verify(self) -> bool:
        """Compare every table now; records the result; True when all are equal."""
        executor: Executor | None = getattr(self._verifying, "executor", None)
        reports = verify(self.settings, self.plan, executor)
        self.last_reports = reports
        result = {
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "ok": all(r.ok for r in reports),
            "tables": {
                r.table: {
                    "source_rows": r.source_rows,
                    "target_rows": r.target_rows,
                    "differing_ranges": len(r.differing_ranges),
                    "missing_in_target": r.missing_in_target,
                    "extra_in_target": r.extra_in_target,
                    "different_values": r.different_values,
                    "differing_keys": [
                        list(k) if isinstance(k, tuple | list) else [k]
                        for k in r.differing_keys[:20]
                    ],
                }
                for r in reports
            },
        }
        with self._changing() as state:
            state.verifications = [*state.verifications, result][-50:]
        for report in reports:
            log.info(report.summary())
        return bool(result["ok"])

    # --- positions ---------------------------------------------------------------------------
    def source_position(self) -> int:
        """The source's current log position (a binlog coordinate or an LSN, as an integer)."""
        return self.side.position()

    def captured_position(self) -> int:
        """Where the forward capture's confirmed position stands (once Kafka acknowledged)."""
        return self.side.captured()

    def _stored_offsets(self) -> dict[tuple[str, int], int]:
        """The offsets the target stored with the rows it applied (one transaction)."""
        conn = postgres_connection(self.settings.postgres, database=self.plan.target.database)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    f"SELECT topic, part, next_offset FROM {q(self.plan.target.schema_name)}."
                    f"{OFFSETS} WHERE grp = %s",
                    (self.group,),
                )
                return {(t, p): o for t, p, o in cur.fetchall()}
        except psycopg2.errors.UndefinedTable:
            return {}
        finally:
            conn.close()

    def _high_watermarks(self) -> dict[tuple[str, int], int]:
        """The ends of the forward change topics (one per source table)."""
        topics = {
            topic_name(self.pipeline.topic_prefix, t.schema, t.name)
            for t in source_tables(self.settings, self.plan)
        }
        ends = self._ends(f"{self.pipeline.topic_prefix}.")
        return {tp: end for tp, end in ends.items() if tp[0] in topics}

    def _ends(self, prefix: str) -> dict[tuple[str, int], int]:
        """The high watermark of every partition of the topics starting with ``prefix``."""
        consumer = Consumer({**self.settings.kafka.client_config(), "group.id": self.group})
        try:
            found = {}
            for topic, metadata in consumer.list_topics(timeout=10).topics.items():
                if topic.startswith(prefix):
                    for partition in metadata.partitions:
                        high = consumer.get_watermark_offsets(
                            TopicPartition(topic, partition), timeout=10
                        )[1]
                        found[(topic, partition)] = int(high)
            return found
        finally:
            consumer.close()

    def wait_applied(self, position: int, timeout: float) -> float | None:
        """Wait until the target applied every change up to the source ``position``: capture
        confirmed it (so its events are in Kafka), then the target stored offsets past the
        ends of the topics as they stood then. The seconds it took, or None on timeout."""
        started = time.monotonic()
        deadline = started + timeout
        while self.captured_position() < position:
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)
        ends = self._high_watermarks()
        while True:
            stored = self._stored_offsets()
            if all(stored.get(tp, 0) >= end for tp, end in ends.items() if end > 0):
                return time.monotonic() - started
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)

    # --- cutover -------------------------------------------------------------------------------
    def _parity(self, rounds: int = 3, reverse: bool = False) -> bool:
        """Parity under live writes. Rows changed while the two sides are read differ for a
        moment (they are in flight); a real divergence differs every time. So a red result is
        compared again once the target caught up, and parity is red only for keys that differed
        in every round."""
        persistent: set[tuple[str, Any]] | None = None
        for attempt in range(rounds):
            if self.verify():
                return True
            keys = {(r.table, repr(k)) for r in self.last_reports for k in r.differing_keys}
            persistent = keys if persistent is None else persistent & keys
            if attempt > 0 and not persistent:
                return True
            if attempt + 1 < rounds:
                wait = self.plan.gates.max_lag_seconds * 4
                if reverse:
                    self._reverse_applied(self._current_lsn(), wait)
                else:
                    self.wait_applied(self.source_position(), wait)
        return False

    @contextmanager
    def _verifier(self) -> Iterator[None]:
        """Verifications read their two sides in two processes of their own for as long as
        this lasts (a cutover or a rollback): the gate's verification starts them, before the
        fence, and the one inside the fence — the exact check that keeps the window open —
        reads on both cores without waiting for them. Only this thread's verifications use
        them: the copy's periodic ones, in its own thread, read in threads as before."""
        with verifier() as executor:
            self._verifying.executor = executor
            try:
                yield
            finally:
                self._verifying.executor = None

    def cutover(self, approved: bool = False) -> dict[str, Any]:
        """Gates, fence, drain, verify, sequences, switch (see the module docstring).

        Raises:
            CutoverRefused: a gate is red (nothing fenced).
            CutoverFailed: something failed after the fence (the fence was lifted).
        """
        with self._verifier():
            return self._cutover(approved)

    def _cutover(self, approved: bool) -> dict[str, Any]:
        gates = self.plan.gates
        if self._reload().phase == "cut over":
            raise CutoverRefused(f"{self.plan.name} is already cut over ({self.state.cutover})")
        if gates.approval and not approved:
            raise CutoverRefused("the plan requires an explicit approval (--approve)")
        if self._fenced_earlier():
            return self._switch("", time.monotonic(), resumed=True)
        lag = self.wait_applied(self.source_position(), gates.max_lag_seconds)
        if lag is None:
            self._record("cutover refused", reason="lag")
            raise CutoverRefused(
                f"the target is more than {gates.max_lag_seconds:g} s behind the source"
            )
        if not self._parity() and gates.parity == "required":
            last = self.state.verifications[-1]["tables"]
            red = {t: v["differing_keys"][:5] for t, v in last.items() if v["differing_ranges"]}
            self._record("cutover refused", reason="parity", tables=red)
            raise CutoverRefused(f"parity is red: {red}")
        fence_wall = _now()
        fenced = time.monotonic()
        self.side.fence(True)
        self._record("fenced", at=fence_wall)
        return self._switch(fence_wall, fenced)

    def _fenced_earlier(self) -> bool:
        """A cutover that died after its fence (the last fence event is an unfinished fence,
        and the source is still read-only): the next run finishes it."""
        marks = [e["what"] for e in self._reload().events]
        last = next(
            (m for m in reversed(marks) if m in ("fenced", "fence lifted", "switched")), None
        )
        return last == "fenced" and self.side.fenced()

    def _offsets_table_exists(self) -> bool:
        conn = self._target_conn()
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT to_regclass(%s) IS NOT NULL",
                    (f"{q(self.plan.target.schema_name)}.{OFFSETS}",),
                )
                return bool(cur.fetchone()[0])
        finally:
            conn.close()

    def _switch(self, fence_wall: str, fenced: float, resumed: bool = False) -> dict[str, Any]:
        """From the fence to the switch: drain, verify, finish the target, record, hook."""
        if resumed:
            fence_wall = next(e["at"] for e in reversed(self.state.events) if e["what"] == "fenced")
            since = time.time() - calendar.timegm(time.strptime(fence_wall, "%Y-%m-%dT%H:%M:%SZ"))
            fenced = time.monotonic() - since  # the window counts the time the run was dead
            self._record("cutover resumed after the fence")
        try:
            final = self.side.final_position()
            # A run that died after dropping the bookkeeping had drained already.
            if resumed and not self._offsets_table_exists():
                drained: float | None = 0.0
            else:
                drained = self.wait_applied(final, self.plan.drain_timeout_seconds)
            if drained is None:
                raise CutoverFailed(
                    f"the target did not apply the final position in "
                    f"{self.plan.drain_timeout_seconds:g} s"
                )
            if self.copy_running.is_set():  # the copy applied everything: stop it here
                self.stop.set()
                deadline = time.monotonic() + 60
                while self.copy_running.is_set() and time.monotonic() < deadline:
                    time.sleep(0.05)
            if not self.verify():
                raise CutoverFailed("parity is red at the fence position")
            self._finish_target()
        except BaseException as exc:
            self.side.fence(False)
            self._record("fence lifted", reason=str(exc))
            if isinstance(exc, CutoverFailed):
                raise
            raise CutoverFailed(f"cutover failed after the fence: {exc}") from exc
        switched = time.monotonic()
        file, pos = divmod(final, 1 << 32)
        cutover = {
            "fence_at": fence_wall,
            "switch_at": _now(),
            "position": {"file_number": file, "pos": pos},
            "write_unavailable_seconds": round(switched - fenced, 3),
            "drain_seconds": round(drained, 3),
        }
        with self._changing() as state:
            state.phase = "cut over"
            state.primary = "target"
            state.cutover = cutover
            state.record("switched", primary="target", **cutover)
        record_primary(self.settings.state_dir, self.plan, "target")
        self._hook(final)
        return cutover

    def _finish_target(self) -> None:
        """Identity sequences past the highest ids; the copy's bookkeeping dropped."""
        schema = q(self.plan.target.schema_name)
        conn = postgres_connection(self.settings.postgres, database=self.plan.target.database)
        try:
            with conn.cursor() as cur:
                for table in source_tables(self.settings, self.plan):
                    name = f"{schema}.{q(self.plan.target_table(table.name))}"
                    if table.identity is not None:
                        cur.execute(
                            "SELECT setval(pg_get_serial_sequence(%s, %s), "
                            f"COALESCE((SELECT max({q(table.identity)}) FROM {name}), 0)::bigint "
                            "+ 1, false)",
                            (name, table.identity),
                        )
                    cur.execute(
                        f"ALTER TABLE {name} DROP COLUMN IF EXISTS {POSITION[0]}, "
                        f"DROP COLUMN IF EXISTS {POSITION[1]}"
                    )
                    guard = q(self.plan.target_table(table.name) + "__deletes")
                    cur.execute(f"DROP TABLE IF EXISTS {schema}.{guard}")
                cur.execute(f"DROP TABLE IF EXISTS {schema}.{OFFSETS}")
            conn.commit()
            # Reverse replication starts here, inside the fence: the slot's first position is
            # before any write to the new primary.
            reverse = self.reverse_pipeline()
            selection = TableSelection(include=[f"{self.plan.target.schema_name}.*"])
            ensure_publication(conn, reverse.publication, selection)
            conn.commit()
            if slot_health(conn, reverse.slot) is None:
                with conn.cursor() as cur:
                    cur.execute(
                        "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')",
                        (reverse.slot,),
                    )
                conn.commit()
        except psycopg2.Error:
            conn.rollback()
            raise
        finally:
            conn.close()

    # --- rollback ------------------------------------------------------------------------------
    def _target_conn(self, autocommit: bool = True) -> Any:
        conn = postgres_connection(self.settings.postgres, database=self.plan.target.database)
        conn.autocommit = autocommit
        return conn

    def _reverse_applied(self, lsn: int, timeout: float) -> float | None:
        """Wait until reverse capture confirmed ``lsn`` of the target and the applier committed
        every reverse record then in Kafka; seconds, or None on timeout."""
        started = time.monotonic()
        deadline = started + timeout
        reverse = self.reverse_pipeline()
        conn = self._target_conn()
        try:
            while True:
                health = slot_health(conn, reverse.slot)
                if health is not None and health.confirmed_flush_lsn >= lsn:
                    break
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.05)
        finally:
            conn.close()
        admin = AdminClient(self.settings.kafka.client_config())
        prefix = f"{reverse.topic_prefix}.{self.plan.target.schema_name}."
        ends = {tp: e for tp, e in self._ends(prefix).items() if e > 0}
        request = [
            ConsumerGroupTopicPartitions(
                self.reverse_group, [TopicPartition(t, p) for t, p in ends]
            )
        ]
        while True:
            if not ends:
                return time.monotonic() - started
            found = admin.list_consumer_group_offsets(request)[self.reverse_group].result(10)
            done = {(tp.topic, tp.partition): tp.offset for tp in found.topic_partitions}
            if all(done.get(tp, -1) >= end for tp, end in ends.items()):
                return time.monotonic() - started
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)

    def _current_lsn(self) -> int:
        conn = self._target_conn()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
                return int(cur.fetchone()[0])
        finally:
            conn.close()

    def _fence_target(self, on: bool) -> None:
        fence_postgres(self.settings, self.plan.target.database, on)

    def rollback(self, approved: bool = False) -> dict[str, Any]:
        """Make the old source the primary again, with the new primary's changes carried back:
        gates (reverse lag, parity, approval), fence the target, drain, verify, unfence the
        source, switch.

        Raises:
            CutoverRefused: not cut over, or a gate is red (nothing fenced).
            CutoverFailed: something failed after the fence (the fence was lifted).
        """
        with self._verifier():
            return self._rollback(approved)

    def _rollback(self, approved: bool) -> dict[str, Any]:
        gates = self.plan.gates
        if self._reload().phase != "cut over":
            raise CutoverRefused(f"{self.plan.name} is not cut over (phase {self.state.phase})")
        if gates.approval and not approved:
            raise CutoverRefused("the plan requires an explicit approval (--approve)")
        if self._reverse_applied(self._current_lsn(), gates.max_lag_seconds) is None:
            self._record("rollback refused", reason="lag")
            raise CutoverRefused(
                f"reverse replication is more than {gates.max_lag_seconds:g} s behind"
            )
        if not self._parity(reverse=True) and gates.parity == "required":
            self._record("rollback refused", reason="parity")
            raise CutoverRefused("parity is red between the new primary and the old source")
        fence_wall = _now()
        fenced = time.monotonic()
        self._fence_target(True)
        self._record("target fenced", at=fence_wall)
        try:
            final = self._current_lsn()
            drained = self._reverse_applied(final, self.plan.drain_timeout_seconds)
            if drained is None:
                raise CutoverFailed("the old source did not apply the target's final changes")
            if self.copy_running.is_set():
                self.stop.set()
                deadline = time.monotonic() + 60
                while self.copy_running.is_set() and time.monotonic() < deadline:
                    time.sleep(0.05)
            if not self.verify():
                raise CutoverFailed("parity is red at the target's final position")
            self.side.sync_sequences()
            self.side.fence(False)
        except BaseException as exc:
            self._fence_target(False)
            self._record("target fence lifted", reason=str(exc))
            if isinstance(exc, CutoverFailed):
                raise
            raise CutoverFailed(f"rollback failed after the fence: {exc}") from exc
        switched = time.monotonic()
        conn = self._target_conn()
        try:
            drop_slot(conn, self.reverse_pipeline().slot, timeout=30)
        finally:
            conn.close()
        result = {
            "fence_at": fence_wall,
            "switch_at": _now(),
            "target_lsn": final,
            "write_unavailable_seconds": round(switched - fenced, 3),
            "drain_seconds": round(drained, 3),
        }
        with self._changing() as state:
            state.phase = "rolled back"
            state.primary = "source"
            state.record("rolled back", primary="source", **result)
        record_primary(self.settings.state_dir, self.plan, "source")
        return result

    def _hook(self, position: int) -> None:
        if not self.plan.switch_hook:
            return
        env = {
            **os.environ,
            "SLUICEWAY_MIGRATION": self.plan.name,
            "SLUICEWAY_PRIMARY": f"postgresql://{self.settings.postgres.host}:"
            f"{self.settings.postgres.port}/{self.plan.target.database}",
            "SLUICEWAY_FENCE_POSITION": f"{position >> 32}:{position & 0xFFFFFFFF}",
        }
        done = subprocess.run(  # noqa: S602 - the plan's own hook, run as its author wrote it
            self.plan.switch_hook, shell=True, env=env, capture_output=True, text=True, check=False
        )
        self._record("switch hook", exit=done.returncode, output=done.stdout[-2000:])


def fence_postgres(settings: Settings, database: str, on: bool) -> None:
    """Fence a PostgreSQL database: new sessions are read-only and the applications' open
    sessions are closed (Sluiceway's own, named ``sluiceway``, stay: capture and appliers
    override the default per session). ``on=False`` lifts it."""
    name = pgsql.Identifier(database)
    conn = postgres_connection(settings.postgres, database="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            if not on:
                query = "ALTER DATABASE {} RESET default_transaction_read_only"
                cur.execute(pgsql.SQL(query).format(name))
                return
            query = "ALTER DATABASE {} SET default_transaction_read_only = on"
            cur.execute(pgsql.SQL(query).format(name))
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                "AND backend_type = 'client backend' AND pid <> pg_backend_pid() "
                "AND application_name NOT LIKE 'sluiceway%%'",
                (database,),
            )
    finally:
        conn.close()


class _MySQLSide:
    """The MariaDB/MySQL source: binlog positions, ``read_only`` fence."""

    def __init__(self, runner: MigrationRunner) -> None:
        self.runner = runner

    def _conn(self) -> Any:
        return mariadb_connection(
            self.runner.settings.mariadb,
            database=self.runner.plan.source.database,
            autocommit=True,
        )

    def position(self) -> int:
        conn = self._conn()
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW MASTER STATUS")
                file, pos = cur.fetchone()[:2]
        finally:
            conn.close()
        return encode_position(str(file), int(pos))

    def captured(self) -> int:
        runner = self.runner
        saved = BinlogPosition.load(
            BinlogPosition.path(runner.settings.state_dir, runner.pipeline.name)
        )
        return encode_position(saved.file, saved.pos) if saved and saved.snapshot_done else 0

    def fence(self, on: bool) -> None:
        conn = self._conn()
        try:
            with conn.cursor() as cur:
                cur.execute(f"SET GLOBAL read_only = {'ON' if on else 'OFF'}")
        finally:
            conn.close()

    def fenced(self) -> bool:
        conn = self._conn()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT @@read_only")
                return bool(cur.fetchone()[0])
        finally:
            conn.close()

    def sync_sequences(self) -> None:
        """InnoDB moves AUTO_INCREMENT past explicit ids by itself: nothing to do."""

    def final_position(self) -> int:
        """After the fence: wait for transactions still writing, then the final position."""
        conn = self._conn()
        deadline = time.monotonic() + 10
        try:
            with conn.cursor() as cur:
                while time.monotonic() < deadline:
                    cur.execute(
                        "SELECT COUNT(*) FROM information_schema.innodb_trx "
                        "WHERE trx_mysql_thread_id <> CONNECTION_ID() AND trx_rows_modified > 0"
                    )
                    if int(cur.fetchone()[0]) == 0:
                        break
                    time.sleep(0.02)
        finally:
            conn.close()
        return self.position()


class _PostgresSide:
    """A PostgreSQL source: LSNs, the forward slot's confirmed position, a database fence."""

    def __init__(self, runner: MigrationRunner) -> None:
        self.runner = runner

    def _conn(self) -> Any:
        runner = self.runner
        conn = postgres_connection(runner.settings.postgres, database=runner.plan.source.database)
        conn.autocommit = True
        return conn

    def position(self) -> int:
        conn = self._conn()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
                return int(cur.fetchone()[0])
        finally:
            conn.close()

    def captured(self) -> int:
        conn = self._conn()
        try:
            health = slot_health(conn, self.runner.pipeline.slot)
        finally:
            conn.close()
        done = CaptureState.load(
            CaptureState.path(self.runner.settings.state_dir, self.runner.pipeline.name)
        )
        if health is None or done is None or not done.snapshot_done:
            return 0
        return health.confirmed_flush_lsn

    def fence(self, on: bool) -> None:
        fence_postgres(self.runner.settings, self.runner.plan.source.database, on)

    def fenced(self) -> bool:
        conn = self._conn()
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT COALESCE(bool_or(s = 'default_transaction_read_only=on'), false) "
                    "FROM pg_db_role_setting r JOIN pg_database d ON d.oid = r.setdatabase, "
                    "unnest(r.setconfig) s WHERE d.datname = %s",
                    (self.runner.plan.source.database,),
                )
                return bool(cur.fetchone()[0])
        finally:
            conn.close()

    def final_position(self) -> int:
        """After the fence (applications' sessions closed): the final LSN."""
        return self.position()

    def sync_sequences(self) -> None:
        """Before the old source is the primary again: its sequences past every id the new
        primary wrote (PostgreSQL does not move a sequence for explicit ids)."""
        runner = self.runner
        conn = postgres_connection(
            runner.settings.postgres,
            database=runner.plan.source.database,
            options="-c default_transaction_read_only=off",
        )
        try:
            with conn.cursor() as cur:
                for table in source_tables(runner.settings, runner.plan):
                    if table.identity is None:
                        continue
                    name = f"{q(table.schema)}.{q(table.name)}"
                    cur.execute(
                        "SELECT setval(pg_get_serial_sequence(%s, %s), "
                        f"COALESCE((SELECT max({q(table.identity)}) FROM {name}), 0)::bigint "
                        "+ 1, false)",
                        (name, table.identity),
                    )
            conn.commit()
        finally:
            conn.close()


class CutoverRefused(SluicewayError):
    """A gate is red: nothing was fenced, the source is still the primary."""


class CutoverFailed(SluicewayError):
    """The cutover failed after the fence; the fence was lifted, the source is the primary."""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
