"""Stream processing: a pipeline's processors as one Quix Streams application.

Quix Streams gives Kafka-native dataframes with state in RocksDB (changelogged to Kafka, so a
restarted or moved worker recovers it), event-time windows, joins and exactly-once processing
with Kafka transactions; Sluiceway adds the change-event contract around it:

- **input**: change topics (Debezium envelopes) become working rows — the row image (``after``,
  ``before`` for deletes) plus ``__op``, ``__pos`` (the source position) and ``__ts`` (commit
  time, the event time). Values keep the event encoding (decimals as exact strings);
  expressions see them typed (`Decimal`), from the table shapes capture publishes;
- **table views and joins** (`streaming.processors.tables`): the joined table's change topic
  is read into a view of its current rows (deletes remove keys), loaded before processing
  starts, so an event meets every row captured before it, with no re-keying; the join is by
  processing time;
- **windows** aggregate the inserts of a stream per key in event time, with a grace period;
  events later than it are dropped and counted (``stats.late``) and, with ``late: topic``,
  also written to ``<prefix>.enriched.<name>.late`` with how late they were (at least once:
  outside the processing transaction);
- **python** steps (``module:function``) let power users change or drop working rows in
  plain Python between the declarative steps and the window;
- **output**: ``<prefix>.enriched.<name>``, in the same envelope as capture writes (source
  connector ``sluiceway-processor``, schema ``enriched``), keyed by the source row's key (by key
  and window start for windows), with its shape published to ``<prefix>.schemas`` — so every
  loader loads enrichment topics as tables with no extra code.

Poison records (not JSON, not an envelope, a failing expression) go to the dead-letter topic
with their origin and error when the pipeline's ``errors.tolerance`` is ``all``; otherwise they
stop processing, named.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import warnings
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer

with warnings.catch_warnings():
    # authlib, under quixstreams, warns about its own modules at import, after installing an
    # "always" filter for its warnings: ours goes in front of that one.
    import authlib.deprecate  # type: ignore[import-untyped]  # noqa: F401

    warnings.filterwarnings("ignore", message="The httpx module is deprecated")
    from quixstreams import Application
    from quixstreams.kafka.configuration import ConnectionConfig

from loaders.schemas import SchemaCatalog
from sluiceway.connect import kafka_admin
from sluiceway.errors import ConfigError
from sluiceway.pipeline import JoinSpec, Pipeline, ProcessorSpec, TopicSettings
from sluiceway.settings import Settings
from streaming.events import ColumnSchema, TableSchema
from streaming.kafka.deadletter import DeadLetters
from streaming.kafka.topics import ensure_topics
from streaming.processors.expressions import Expression
from streaming.processors.tables import TableView

__all__ = ["Processing", "ProcessingStats", "enriched_topic", "state_directory", "tables_directory"]

log = logging.getLogger(__name__)

META = ("__op", "__pos", "__ts")


def enriched_topic(pipeline: Pipeline, name: str) -> str:
    return f"{pipeline.topic_prefix}.enriched.{name}"


@dataclass
class ProcessingStats:
    """What a running processing application reports."""

    events_in: int = 0
    events_out: int = 0
    late: int = 0
    dead_letters: int = 0


class _Application(Application):
    """Quix's application, run from a worker thread: signals are the owner's business."""

    def _setup_signal_handlers(self) -> None:  # Quix installs them from run()
        return None


def state_directory(settings: Settings, pipeline: Pipeline, group: str) -> Path:
    """The pipeline's state directory for Quix, with the group's directory in it made here:
    Quix checks for that one, then makes it without ``exist_ok``, so of two workers started
    in the same instant the second could fail with FileExistsError."""
    state_dir = settings.state_dir / "processing" / pipeline.name
    (state_dir / group).mkdir(parents=True, exist_ok=True)
    return state_dir


def tables_directory(settings: Settings, pipeline: Pipeline) -> Path:
    """Where the pipeline's workers keep the stores of their table views (`TableView`)."""
    return settings.state_dir / "processing-tables" / pipeline.name


def _typed(row: dict[str, Any], types: dict[str, str]) -> dict[str, Any]:
    """The row as expressions see it: decimals as `Decimal`."""
    out = dict(row)
    for name, kind in types.items():
        value = out.get(name)
        if kind == "decimal" and isinstance(value, str):
            with contextlib.suppress(ArithmeticError):
                out[name] = Decimal(value)
    return out


def _encoded(value: Any) -> Any:
    """A computed value in the event encoding (exact decimals as strings)."""
    if isinstance(value, Decimal):
        return str(value)
    return value


def _logical(value: Any) -> ColumnSchema:
    if isinstance(value, bool):
        return ColumnSchema("", "boolean", "bool")
    if isinstance(value, int):
        return ColumnSchema("", "int64", "int8")
    if isinstance(value, float):
        return ColumnSchema("", "float64", "float8")
    if isinstance(value, Decimal):
        return ColumnSchema("", "decimal", "numeric")
    return ColumnSchema("", "string", "text")


class _Output:
    """Turns working rows into envelopes of one enrichment table, publishing its shape."""

    def __init__(self, owner: Processing, name: str, keys: list[str]) -> None:
        self.owner = owner
        self.name = name
        self.keys = keys
        self.columns: dict[str, ColumnSchema] = {}
        self.published: set[str] = set()
        self.shape: TableSchema | None = None

    def envelope(self, row: dict[str, Any]) -> dict[str, Any]:
        owner = self.owner
        data = {k: v for k, v in row.items() if k not in META}
        changed = False
        for column, value in data.items():
            if column not in self.columns and value is not None:
                known = owner.types_of(column, row)
                self.columns[column] = ColumnSchema(
                    column,
                    known.type,
                    known.source_type,
                    key=column in self.keys,
                    precision=known.precision,
                    scale=known.scale,
                    items=known.items,
                )
                changed = True
        for key in self.keys:
            if key not in self.columns:
                self.columns[key] = ColumnSchema(key, "string", "text", key=True)
                changed = True
        shape = self.shape
        if changed or shape is None:  # a new shape only when a column appears
            shape = self.shape = TableSchema("enriched", self.name, tuple(self.columns.values()))
            if shape.id not in self.published:
                owner.publish(shape)
                self.published.add(shape.id)
        op = row.get("__op", "c")
        commit, lsn = row.get("__pos") or (0, 0)
        source = {
            "version": "sluiceway",
            "connector": "sluiceway-processor",
            "name": owner.pipeline.name,
            "db": owner.pipeline.name,
            "schema": "enriched",
            "table": self.name,
            "ts_ms": row.get("__ts"),
            "snapshot": "false",
            "commit_lsn": commit,
            "lsn": lsn,
            "schema_id": shape.id,
        }
        image = {c: data.get(c) for c in self.columns}
        if op == "d":
            return {
                "before": {k: image.get(k) for k in self.keys},
                "after": None,
                "source": source,
                "op": "d",
                "ts_ms": int(time.time() * 1000),
            }
        return {
            "before": None,
            "after": image,
            "source": source,
            "op": op,
            "ts_ms": int(time.time() * 1000),
        }

    def key_of(self, envelope: dict[str, Any]) -> bytes:
        """The output record's key: the output key columns, as capture keys its events."""
        image = envelope["after"] or envelope["before"] or {}
        return orjson.dumps({k: image.get(k) for k in self.keys})


def _python_step(path: str) -> Any:
    """A power user's own step (``module:function``): the working row in, a row or None out.
    The meta fields (``__op``, ``__pos``, ``__ts``) are kept if the function drops them."""
    import importlib

    module_name, _, name = path.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"processor python step {path}: {exc}") from None

    def step(row: dict[str, Any]) -> dict[str, Any] | None:
        result = function(dict(row))
        if result is None:
            return None
        if not isinstance(result, dict):
            raise TypeError(f"{path} returned {type(result).__name__}, not a dict or None")
        return {**{k: row[k] for k in META if k in row}, **result}

    return step


class Processing:
    """Runs every processor of one pipeline until `stop` is set."""

    def __init__(self, settings: Settings, pipeline: Pipeline, group: str | None = None) -> None:
        if not pipeline.processors:
            raise ConfigError(f"pipeline {pipeline.name} declares no processors")
        self.settings = settings
        self.pipeline = pipeline
        self.stop = threading.Event()
        self.stats = ProcessingStats()
        # Quix names its internal topics after the group and the chain of streams: short names
        # keep them under Kafka's 249 characters.
        self.group = group or f"sluiceway.{pipeline.name}.proc"
        self.schemas = SchemaCatalog(settings.kafka, f"{pipeline.topic_prefix}.schemas")
        self._column_types: dict[str, ColumnSchema] = {}
        self._schema_producer = Producer(
            {**settings.kafka.client_config(), "enable.idempotence": True, "acks": "all"}
        )
        # Late events (window.late: topic) go out beside the transaction: at least once.
        self._late_producer = Producer(
            {**settings.kafka.client_config(), "enable.idempotence": True, "acks": "all"}
        )
        self.dead_letters: DeadLetters | None = None
        if pipeline.errors.tolerance == "all":
            ensure_topics(
                kafka_admin(settings.kafka),
                [pipeline.dead_letter_topic],
                TopicSettings(),
                partitions=1,
            )
            self.dead_letters = DeadLetters(
                settings.kafka, pipeline.dead_letter_topic, pipeline.name, "process"
            )
        state_dir = state_directory(settings, pipeline, self.group)
        self.app = _Application(
            broker_address=ConnectionConfig.from_librdkafka_dict(
                settings.kafka.client_config(), ignore_extras=True
            ),
            consumer_group=self.group,
            processing_guarantee="exactly-once",
            auto_offset_reset="earliest",
            state_dir=str(state_dir),
            on_processing_error=self._on_error,
            loglevel=None,
            # A worker that dies (kill -9) loses its partitions to the others within ~10 s
            # (Kafka's default session timeout is 45 s).
            consumer_extra_config={"session.timeout.ms": 10_000, "heartbeat.interval.ms": 2_000},
            # A killed worker's open transaction holds back read_committed consumers of its
            # output until the broker aborts it: 15 s (3x the checkpoint interval), not 60 s.
            producer_extra_config={"transaction.timeout.ms": 15_000},
        )
        self._inputs: dict[str, Any] = {}
        self._outputs: dict[str, Any] = {}
        self._views: dict[str, TableView] = {}
        for spec in pipeline.processors:
            self._outputs[spec.name] = self._build(spec)

    # --- shapes -----------------------------------------------------------------------------
    def table_schema(self, qualified: str, wait: float = 30.0) -> TableSchema:
        """The newest shape capture published for ``schema.table``, waiting up to ``wait``
        seconds for one (`SchemaCatalog.latest`)."""
        schema, _, table = qualified.partition(".")
        shape = self.schemas.latest(schema, table, wait)
        if shape is None:
            raise ConfigError(f"no shape of {qualified} in {self.schemas.topic}: run capture first")
        for column in shape.columns:
            self._column_types.setdefault(column.name, column)
        return shape

    def types_of(self, column: str, row: dict[str, Any]) -> ColumnSchema:
        known = self._column_types.get(column)
        return known if known is not None else _logical(row.get(column))

    def publish(self, shape: TableSchema) -> None:
        self._schema_producer.produce(
            f"{self.pipeline.topic_prefix}.schemas",
            orjson.dumps(shape.to_json()),
            orjson.dumps({"id": shape.id}),
        )
        self._schema_producer.flush(30)

    # --- building ---------------------------------------------------------------------------
    def _working(self, value: Any) -> dict[str, Any] | None:
        """A change event as a working row (None: nothing to process)."""
        if not isinstance(value, dict):
            raise ValueError("not a JSON object")
        envelope = value.get("payload", value) if "payload" in value else value
        op = envelope["op"]
        if op == "t":
            return None
        row = envelope["before"] if op == "d" else envelope["after"]
        source = envelope["source"]
        self.stats.events_in += 1
        return {
            **(row or {}),
            "__op": op,
            "__pos": [int(source.get("commit_lsn") or 0), int(source.get("lsn") or 0)],
            "__ts": int(source.get("ts_ms") or envelope.get("ts_ms") or 0),
        }

    def _input(self, qualified: str) -> Any:
        if qualified not in self._inputs:
            topic = self.app.topic(
                f"{self.pipeline.topic_prefix}.{qualified}",
                value_deserializer="json",
                key_deserializer="bytes",
            )
            sdf = self.app.dataframe(topic)
            sdf = (
                sdf.filter(lambda v: v is not None)
                .apply(self._working)
                .filter(lambda v: v is not None)
            )
            self._inputs[qualified] = sdf
        return self._inputs[qualified]

    def _view(self, join: JoinSpec) -> TableView:
        """The joined table's view (one per table, shared by the processors)."""
        shape = self.table_schema(join.table)
        keys = [c.name for c in shape.columns if c.key]
        if len(keys) != 1:
            raise ConfigError(f"{join.table}: a join needs a one-column primary key, not {keys}")
        if join.table not in self._views:
            topic = f"{self.pipeline.topic_prefix}.{join.table}"
            self._views[join.table] = TableView(
                self.settings.kafka, topic, keys[0], tables_directory(self.settings, self.pipeline)
            )
        return self._views[join.table]

    def _build(self, spec: ProcessorSpec) -> Any:
        if spec.source in self._outputs:
            sdf, types, keys = self._outputs[spec.source]
        else:
            shape = self.table_schema(spec.source)
            types = {c.name: c.type for c in shape.columns}
            keys = [c.name for c in shape.columns if c.key]
            sdf = self._input(spec.source)
        types = dict(types)
        if not spec.deletes:
            sdf = sdf.filter(lambda v: v["__op"] != "d")
        if spec.where:
            where = Expression(spec.where)
            sdf = sdf.filter(lambda v, e=where, t=types: v["__op"] == "d" or bool(e(_typed(v, t))))
        for join in spec.join:
            right_shape = self.table_schema(join.table)
            columns = join.columns or {
                f"{join.table.split('.')[-1]}_{c.name}": c.name for c in right_shape.columns
            }
            for out, column in columns.items():
                found = next((c for c in right_shape.columns if c.name == column), None)
                if found is None:
                    raise ConfigError(f"{spec.name}: {join.table} has no column {column!r}")
                types[out] = found.type
                self._column_types.setdefault(out, found)
            view = self._view(join)

            def merge(
                left: dict[str, Any],
                t: TableView = view,
                c: dict[str, str] = columns,
                on: str = join.key,
            ) -> dict[str, Any]:
                if left["__op"] == "d":
                    return {**left, "__matched": True}
                right_row = t.get(left.get(on))
                extra = {o: (right_row.get(col) if right_row else None) for o, col in c.items()}
                return {**left, **extra, "__matched": right_row is not None}

            sdf = sdf.apply(merge)
            if join.how == "inner":
                sdf = sdf.filter(lambda v: bool(v.get("__matched")))
            sdf = sdf.apply(lambda v: {k: x for k, x in v.items() if k != "__matched"})
        for out, text in spec.derive.items():
            expression = Expression(text)

            def derive(
                v: dict[str, Any],
                e: Expression = expression,
                o: str = out,
                t: dict[str, str] = types,
            ) -> dict[str, Any]:
                return {**v, o: _encoded(e(_typed(v, t)))} if v["__op"] != "d" else v

            sdf = sdf.apply(derive)
        if spec.where_after:
            after = Expression(spec.where_after)
            sdf = sdf.filter(lambda v, e=after, t=types: v["__op"] == "d" or bool(e(_typed(v, t))))
        if spec.select:
            wanted = set(spec.select) | set(keys) | set(META)
            sdf = sdf.apply(lambda v, w=wanted: {k: x for k, x in v.items() if k in w})
        if spec.python:
            sdf = sdf.apply(_python_step(spec.python)).filter(lambda v: v is not None)
        if spec.window is not None:
            sdf, keys = self._window(spec, sdf, types), [spec.window.key, "window_start"]
        output = _Output(self, spec.name, keys)
        topic = self.app.topic(
            enriched_topic(self.pipeline, spec.name),
            value_serializer="json",
            key_serializer="bytes",
        )
        sdf.apply(self._count).apply(output.envelope).to_topic(topic, key=output.key_of)
        return sdf, types, keys

    def _count(self, row: dict[str, Any]) -> dict[str, Any]:
        self.stats.events_out += 1
        return row

    def _window(self, spec: ProcessorSpec, sdf: Any, types: dict[str, str]) -> Any:
        window = spec.window
        assert window is not None
        sums = {out: Expression(text) for out, text in window.sum.items()}
        sdf = sdf.filter(lambda v: v["__op"] == "c")
        sdf = sdf.set_timestamp(lambda v, _k, ts, _h: v.get("__ts") or ts)
        sdf = sdf.group_by(lambda v, k=window.key: str(v.get(k)), name=f"{spec.name}_w")
        duration = int(window.seconds * 1000)
        grace = int(window.grace_seconds * 1000)

        late_topic = enriched_topic(self.pipeline, spec.name) + ".late"
        if window.late == "topic":
            ensure_topics(
                kafka_admin(self.settings.kafka), [late_topic], self.pipeline.topics, partitions=1
            )

        def late(
            value: Any,
            key: Any,
            timestamp_ms: int,
            late_by_ms: int,
            start: int,
            end: int,
            *_rest: Any,
        ) -> bool:
            self.stats.late += 1
            if window.late == "topic":
                record = {
                    "row": {k: v for k, v in value.items() if k not in META},
                    "timestamp_ms": timestamp_ms,
                    "late_by_ms": late_by_ms,
                    "window_start": start,
                    "window_end": end,
                }
                self._late_producer.produce(
                    late_topic,
                    orjson.dumps(record, default=str),
                    key if isinstance(key, bytes) else str(key).encode(),
                )
                self._late_producer.poll(0)
            return False  # counted (and sent) here; Quix need not log each one

        if window.kind == "hopping":
            definition = sdf.hopping_window(
                duration, int((window.step_seconds or window.seconds) * 1000), grace, on_late=late
            )
        elif window.kind == "sliding":
            definition = sdf.sliding_window(duration, grace, on_late=late)
        else:
            definition = sdf.tumbling_window(duration, grace, on_late=late)

        def initializer(v: dict[str, Any]) -> dict[str, Any]:
            return reducer(
                {
                    "key": v.get(window.key),
                    "count": 0,
                    "pos": [0, 0],
                    "ts": 0,
                    **{o: "0" for o in sums},
                },
                v,
            )

        def reducer(agg: dict[str, Any], v: dict[str, Any]) -> dict[str, Any]:
            typed = _typed(v, types)
            out = dict(agg)
            out["count"] = agg["count"] + 1
            out["pos"] = max(agg["pos"], v["__pos"])
            out["ts"] = max(agg["ts"], v["__ts"])
            for name, expression in sums.items():
                value = expression(typed)
                if value is not None:
                    out[name] = str(Decimal(agg[name]) + Decimal(str(value)))
            return out

        reduced = definition.reduce(reducer, initializer)
        emitted = reduced.final() if window.emit == "final" else reduced.current()

        def row(result: dict[str, Any]) -> dict[str, Any]:
            agg = result["value"]
            values = {o: Decimal(agg[o]) for o in sums}
            out: dict[str, Any] = {
                window.key: agg["key"],
                "window_start": result["start"],
                "window_end": result["end"],
                **{o: str(v) for o, v in values.items()},
            }
            if window.count:
                out[window.count] = agg["count"]
            out.update({"__op": "c", "__pos": agg["pos"], "__ts": agg["ts"]})
            return out

        for name in sums:
            self._column_types.setdefault(name, ColumnSchema(name, "decimal", "numeric"))
        self._column_types["window_start"] = ColumnSchema("window_start", "int64", "int8")
        self._column_types["window_end"] = ColumnSchema("window_end", "int64", "int8")
        return emitted.apply(row)

    # --- errors -----------------------------------------------------------------------------
    def _on_error(self, exc: Exception, row: Any, _logger: Any) -> bool:
        """Quix's processing-error hook: dead-letter the record (tolerance all) or stop."""
        if self.dead_letters is None or row is None:
            return False
        self.dead_letters.send(
            row.key,
            row.value if isinstance(row.value, bytes) else orjson.dumps(row.value),
            exc,
            topic=row.topic,
            partition=row.partition,
            offset=row.offset,
        )
        self.dead_letters.flush()
        self.stats.dead_letters = self.dead_letters.count
        return True

    # --- running ----------------------------------------------------------------------------
    def run(self) -> None:
        """Process until `stop` is set (the current transaction is committed first)."""

        def watch() -> None:
            self.stop.wait()
            self.app.stop()

        threading.Thread(target=watch, daemon=True, name="processing-stop").start()
        for view in self._views.values():
            view.start()  # bootstrap: events meet every row captured before them
        try:
            self.app.run()
        finally:
            self._late_producer.flush(30)
            for view in self._views.values():
                view.stop()
