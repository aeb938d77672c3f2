"""Capture-time transforms in Kafka Connect's vocabulary, applied before an event is produced.

Kafka Connect runs single message transforms (SMTs) between a connector and the producer; so
does Sluiceway, in the capture process itself, so a masked or hashed value never exists in a
topic — not in the value, not in the key, not in a header. The transforms are declared in the
pipeline specification (``transforms:``) and run in order:

| type | Kafka Connect | what it does |
|---|---|---|
| drop / keep / rename | ReplaceField | remove fields, keep only some, rename (key fields too) |
| mask | MaskField | fixed characters (``keep_last`` shows a tail, e.g. card numbers) |
| hash | — | salted SHA-256 hex; the salt is a secret from the environment |
| cast | Cast | int64, float64, string, boolean, decimal |
| filter | Filter + predicate | keep events whose row matches an expression |
| lineage | InsertField / InsertHeader | source, pipeline, capture time as headers or fields |
| route | RegexRouter | rewrite the topic name (``$1`` or ``\\1`` groups) |
| flatten | ExtractNewRecordState | the plain row with ``__op``, ``__deleted``, ``__source_ts_ms`` |
| python | (custom SMT) | ``module:function`` taking a `Record`, returning it or None |

Transforms also rewrite the table's published shape (`TableSchema`): a masked column becomes a
string, a dropped one disappears, lineage fields appear; the event names the transformed shape
in ``source.schema_id``, so loaders create exactly what reaches them. A key column cannot be
dropped (loaders upsert by it): that fails when the table is first seen, naming the field.

Written here rather than taken from a library: Kafka Connect's SMTs are Java, and no Python
package applies them to Debezium envelopes with schema tracking.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import SecretStr

from sluiceway.errors import ConfigError, SluicewayError
from sluiceway.pipeline import (
    AnyTransform,
    CastFields,
    DropFields,
    FilterRecords,
    FlattenEnvelope,
    HashFields,
    InsertLineage,
    KeepFields,
    MaskFields,
    Pipeline,
    PythonTransform,
    RenameFields,
    RouteTopic,
)
from streaming.events import UNAVAILABLE, ColumnSchema, TableSchema

__all__ = ["Record", "TableTransforms", "TransformChain", "TransformError"]


class TransformError(SluicewayError):
    """A transform failed on one record (the record goes to the dead-letter topic, or capture
    stops, per ``errors.tolerance``)."""


@dataclass(slots=True)
class Record:
    """One event on its way to Kafka: what a transform sees and returns."""

    topic: str
    key: dict[str, Any] | None
    value: dict[str, Any] | None  # the envelope (a plain row once flattened)
    schema: str
    table: str
    headers: list[tuple[str, bytes]] = field(default_factory=list)


_Step = Callable[[Record], Record | None]


def _rows(record: Record) -> list[dict[str, Any]]:
    value = record.value
    if value is None:
        return []
    rows = [value.get("before"), value.get("after")]
    return [r for r in rows if isinstance(r, dict)]


def _each_value(record: Record, names: list[str], apply: Callable[[Any], Any], key: bool) -> None:
    targets = _rows(record)
    if key and record.key is not None:
        targets.append(record.key)
    for row in targets:
        for name in names:
            value = row.get(name)
            if value is not None and value != UNAVAILABLE:
                row[name] = apply(value)


def _column(schema: TableSchema, name: str, what: str) -> ColumnSchema:
    for column in schema.columns:
        if column.name == name:
            return column
    known = ", ".join(c.name for c in schema.columns)
    raise ConfigError(
        f"transforms: {what} names field {name!r}, which {schema.schema}.{schema.table} does "
        f"not have (it has: {known})"
    )


def _mask(spec: MaskFields) -> Callable[[Any], str]:
    def mask(value: Any) -> str:
        text = str(value)
        tail = text[-spec.keep_last :] if spec.keep_last else ""
        length = spec.length if spec.length is not None else max(0, len(text) - len(tail))
        return spec.char * length + tail

    return mask


def _hash(salt: SecretStr) -> Callable[[Any], str]:
    secret = salt.get_secret_value().encode()

    def digest(value: Any) -> str:
        return hashlib.sha256(secret + str(value).encode()).hexdigest()

    return digest


def _cast(target: str) -> Callable[[Any], Any]:
    def cast(value: Any) -> Any:
        if target == "string":
            return ("true" if value else "false") if isinstance(value, bool) else str(value)
        if target == "boolean":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "1", "t", "yes"):
                return True
            if text in ("false", "0", "f", "no"):
                return False
            raise ValueError(f"{value!r} is not a boolean")
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a number") from None
        if target == "decimal":
            return format(number, "f")
        if target == "float64":
            return float(number)
        if number != number.to_integral_value():
            raise ValueError(f"{value!r} is not an integer")
        return int(number)

    return cast


_CAST_LOGICAL = {"int64": "int64", "float64": "float64", "string": "string", "boolean": "boolean"}


class TableTransforms:
    """The transforms that apply to one table shape, and the shape they produce."""

    def __init__(self, steps: list[_Step], output: TableSchema, flattens: bool) -> None:
        self.steps = steps
        self.output = output
        self.schema_id = output.id
        self.flattens = flattens

    def apply(self, record: Record) -> Record | None:
        for step in self.steps:
            result = step(record)
            if result is None:
                return None
            record = result
        value = record.value
        if not self.flattens and value is not None and isinstance(value.get("source"), dict):
            value["source"]["schema_id"] = self.schema_id
        return record


class TransformChain:
    """A pipeline's transforms, planned once per table shape."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.specs: list[AnyTransform] = list(pipeline.transforms)
        self._salts: dict[str, SecretStr] = {}
        self._plans: dict[str, TableTransforms] = {}
        self._callables: dict[str, Callable[[Record], Record | None]] = {}
        for spec in self.specs:
            if isinstance(spec, HashFields):
                salt = os.environ.get(spec.salt_env)
                if not salt:
                    raise ConfigError(
                        f"transforms: hash needs its salt in the environment variable "
                        f"{spec.salt_env}, which is not set"
                    )
                self._salts[spec.salt_env] = SecretStr(salt)
            elif isinstance(spec, PythonTransform):
                self._callables[spec.callable] = _import(spec.callable)

    def __bool__(self) -> bool:
        return bool(self.specs)

    def plan(self, schema: TableSchema) -> TableTransforms:
        """The steps for a table shape (cached by its id).

        Raises:
            ConfigError: a transform names a field the table lacks, or drops a key column.
        """
        found = self._plans.get(schema.id)
        if found is None:
            found = self._build(schema)
            self._plans[schema.id] = found
        return found

    def _build(self, schema: TableSchema) -> TableTransforms:
        steps: list[_Step] = []
        shape = schema
        flattens = False
        for spec in self.specs:
            if not spec.applies(schema.schema, schema.table):
                continue
            step, shape = self._step(spec, shape)
            flattens = flattens or isinstance(spec, FlattenEnvelope)
            steps.append(step)
        return TableTransforms(steps, shape, flattens)

    def _step(self, spec: AnyTransform, shape: TableSchema) -> tuple[_Step, TableSchema]:
        what = spec.type
        if isinstance(spec, DropFields | KeepFields):
            names = {c.name for c in shape.columns}
            for name in spec.fields:
                _column(shape, name, what)
            drop = (
                set(spec.fields)
                if isinstance(spec, DropFields)
                else {n for n in names if n not in spec.fields and n not in shape.key}
            )
            for column in shape.columns:
                if column.key and column.name in drop:
                    raise ConfigError(
                        f"transforms: {what} would remove key field {column.name!r} of "
                        f"{shape.schema}.{shape.table}; loaders upsert by it (mask or hash it)"
                    )
            columns = tuple(c for c in shape.columns if c.name not in drop)
            return _dropper(drop), replace(shape, columns=columns)
        if isinstance(spec, RenameFields):
            for name in spec.fields:
                _column(shape, name, what)
            columns = tuple(replace(c, name=spec.fields.get(c.name, c.name)) for c in shape.columns)
            return _renamer(spec.fields), replace(shape, columns=columns)
        if isinstance(spec, MaskFields | HashFields):
            for name in spec.fields:
                _column(shape, name, what)
            apply = (
                _mask(spec) if isinstance(spec, MaskFields) else _hash(self._salts[spec.salt_env])
            )
            columns = tuple(
                replace(
                    c, type="string", source_type="text", precision=None, scale=None, items=None
                )
                if c.name in spec.fields
                else c
                for c in shape.columns
            )
            return _values(list(spec.fields), apply), replace(shape, columns=columns)
        if isinstance(spec, CastFields):
            for name in spec.fields:
                _column(shape, name, what)
            casts = {name: _cast(kind) for name, kind in spec.fields.items()}
            columns = tuple(
                replace(
                    c,
                    type=_CAST_LOGICAL.get(spec.fields[c.name], "decimal"),
                    source_type=spec.fields[c.name],
                    precision=None,
                    scale=None,
                    items=None,
                )
                if c.name in spec.fields
                else c
                for c in shape.columns
            )
            return _caster(casts), replace(shape, columns=columns)
        if isinstance(spec, FilterRecords):
            return _filter(spec, shape), shape
        if isinstance(spec, InsertLineage):
            step = _lineage(spec, self.pipeline.name)
            if spec.into == "headers":
                return step, shape
            extra = (
                ColumnSchema(f"{spec.prefix}source", "string", "text"),
                ColumnSchema(f"{spec.prefix}pipeline", "string", "text"),
                ColumnSchema(f"{spec.prefix}captured_at", "timestamptz", "timestamptz"),
            )
            return step, replace(shape, columns=shape.columns + extra)
        if isinstance(spec, RouteTopic):
            return _router(spec), shape
        if isinstance(spec, FlattenEnvelope):
            return _flattener(spec), shape
        callable_ = self._callables[spec.callable]
        return _guarded(spec.callable, callable_), shape


def _dropper(drop: set[str]) -> _Step:
    def step(record: Record) -> Record:
        for row in _rows(record):
            for name in drop:
                row.pop(name, None)
        _fix_unchanged(record, lambda n: None if n in drop else n)
        return record

    return step


def _renamer(names: dict[str, str]) -> _Step:
    def rename(row: dict[str, Any]) -> dict[str, Any]:
        return {names.get(k, k): v for k, v in row.items()}

    def step(record: Record) -> Record:
        value = record.value
        if value is not None:
            for side in ("before", "after"):
                if isinstance(value.get(side), dict):
                    value[side] = rename(value[side])
        if record.key is not None:
            record.key = rename(record.key)
        _fix_unchanged(record, lambda n: names.get(n, n))
        return record

    return step


def _fix_unchanged(record: Record, rename: Callable[[str], str | None]) -> None:
    value = record.value
    if value is not None and value.get("unchanged"):
        value["unchanged"] = [m for m in (rename(n) for n in value["unchanged"]) if m]


def _values(names: list[str], apply: Callable[[Any], Any]) -> _Step:
    def step(record: Record) -> Record:
        _each_value(record, names, apply, key=True)
        return record

    return step


def _caster(casts: dict[str, Callable[[Any], Any]]) -> _Step:
    def step(record: Record) -> Record:
        for name, cast in casts.items():
            try:
                _each_value(record, [name], cast, key=True)
            except ValueError as exc:
                raise TransformError(f"cast of field {name!r}: {exc}") from exc
        return record

    return step


def _filter(spec: FilterRecords, shape: TableSchema) -> _Step:
    from streaming.processors.expressions import Expression

    expression = Expression(spec.where)
    decimals = [c.name for c in shape.columns if c.type == "decimal"]

    def step(record: Record) -> Record | None:
        value = record.value
        if value is None:
            return record
        row = value.get("after") if value.get("after") is not None else value.get("before")
        if not isinstance(row, dict):
            return record
        typed = dict(row)
        for name in decimals:
            if isinstance(typed.get(name), str):
                with contextlib.suppress(InvalidOperation):
                    typed[name] = Decimal(typed[name])
        try:
            keep = expression(typed)
        except Exception as exc:
            raise TransformError(f"filter {spec.where!r}: {type(exc).__name__}: {exc}") from exc
        return record if keep else None

    return step


def _lineage(spec: InsertLineage, pipeline: str) -> _Step:
    def step(record: Record) -> Record:
        value = record.value or {}
        source = value.get("source") or {}
        origin = (
            f"{source.get('connector', '')}/{source.get('db', '')}.{record.schema}.{record.table}"
        )
        captured = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"
        if spec.into == "headers":
            record.headers += [
                ("sluiceway.source", origin.encode()),
                ("sluiceway.pipeline", pipeline.encode()),
                ("sluiceway.captured_at", captured.encode()),
            ]
            return record
        for row in _rows(record):
            row[f"{spec.prefix}source"] = origin
            row[f"{spec.prefix}pipeline"] = pipeline
            row[f"{spec.prefix}captured_at"] = captured
        return record

    return step


def _router(spec: RouteTopic) -> _Step:
    pattern = re.compile(spec.regex)
    replacement = re.sub(r"\$(\d+)", r"\\\1", spec.replacement)

    def step(record: Record) -> Record:
        match = pattern.fullmatch(record.topic)
        if match is not None:
            record.topic = match.expand(replacement)
        return record

    return step


def _flattener(spec: FlattenEnvelope) -> _Step:
    def step(record: Record) -> Record | None:
        value = record.value
        if value is None:
            return record
        op = value.get("op")
        source = value.get("source") or {}
        if op == "d":
            if spec.deletes == "drop":
                return None
            if spec.deletes == "tombstone":
                record.value = None
                return record
            row = dict(value.get("before") or record.key or {})
        else:
            row = dict(value.get("after") or {})
        row["__op"] = op
        row["__deleted"] = op == "d"
        row["__source_ts_ms"] = source.get("ts_ms")
        record.value = row
        return record

    return step


def _import(path: str) -> Callable[[Record], Record | None]:
    module_name, _, name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"transforms: python callable {path}: cannot import: {exc}") from None
    found = getattr(module, name, None)
    if not callable(found):
        raise ConfigError(f"transforms: python callable {path}: {name} is not a function")
    return found  # type: ignore[no-any-return]


def _guarded(path: str, function: Callable[[Record], Record | None]) -> _Step:
    def step(record: Record) -> Record | None:
        try:
            return function(record)
        except Exception as exc:
            raise TransformError(f"python transform {path}: {type(exc).__name__}: {exc}") from exc

    return step
