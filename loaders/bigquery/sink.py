"""The BigQuery sink: NDJSON load jobs into a staging table, then a position-guarded MERGE.

BigQuery has no cross-statement transaction a loader can lean on, so effectively-once comes
from idempotency instead: the MERGE applies a change only if it is newer, by position, than
the stored row and than the key's delete guard, history rows are inserted once per Kafka
offset, and the offsets are stored last — a crash in between replays a batch that changes
nothing. (Through `google-cloud-bigquery`; against local-bigquery here, BigQuery itself with
real credentials.)
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any

from google.api_core.exceptions import GoogleAPIError, NotFound
from google.cloud import bigquery

from loaders.base import POSITION, LoadBatch, Mode, Sink, TableBatch
from loaders.bigquery.types import bigquery_type, cast_expression, spelled, widens
from loaders.sql import Dialect, Scd2Views, evolve
from loaders.staging import Stager
from sluiceway.connect import bigquery_client
from sluiceway.errors import SinkFatal, SinkUnavailable
from sluiceway.settings import BigQuerySettings
from streaming.events import ColumnSchema

__all__ = ["BigQuerySink"]

OFFSETS = "_sluiceway_offsets"
_META = [
    bigquery.SchemaField("__op", "STRING"),
    bigquery.SchemaField("__commit_lsn", "INT64"),
    bigquery.SchemaField("__lsn", "INT64"),
    bigquery.SchemaField("__unchanged", "STRING", mode="REPEATED"),
    bigquery.SchemaField("__partition", "INT64"),
    bigquery.SchemaField("__offset", "INT64"),
    bigquery.SchemaField("__ts_ms", "INT64"),
]


def _q(name: str) -> str:
    return "`" + name.replace("`", "\\`") + "`"


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


# What the shared SCD2 view needs of BigQuery's SQL (its other statements are its own).
_DIALECT = Dialect(
    cast=cast_expression,
    contains=lambda items, literal: f"{literal} IN UNNEST({items})",
    temp_table=lambda name, select: [],
    from_ms=lambda ms: f"TIMESTAMP_MILLIS({ms})",
    quote=lambda name: _q(name),
)


class BigQuerySink(Sink):
    """Loads change events into a BigQuery dataset."""

    name = "bigquery"

    def __init__(self, settings: BigQuerySettings, dataset: str) -> None:
        self.client = bigquery_client(settings)
        self.dataset = f"{settings.project}.{dataset}"
        try:
            self.client.create_dataset(self.dataset, exists_ok=True)
        except GoogleAPIError as exc:
            raise SinkUnavailable(f"BigQuery: cannot create dataset {self.dataset}: {exc}") from exc
        self._query(
            f"CREATE TABLE IF NOT EXISTS {self._t(OFFSETS)} "
            "(grp STRING, topic STRING, part INT64, next_offset INT64)"
        )
        self._known: dict[str, dict[str, str]] = {}
        self._tmp = Path(tempfile.mkdtemp(prefix="sluiceway-bigquery-"))
        self.stager = Stager()
        self.views = Scd2Views(_DIALECT)

    def _t(self, name: str) -> str:
        return _q(f"{self.dataset}.{name}")

    def _query(self, sql: str) -> list[Any]:
        try:
            return list(self.client.query(sql).result(timeout=300))
        except GoogleAPIError as exc:
            raise SinkFatal(f"BigQuery refused: {exc}"[:2000]) from exc

    # --- offsets ---------------------------------------------------------------------------
    def stored_offsets(self, group: str) -> dict[tuple[str, int], int]:
        rows = self._query(
            f"SELECT topic, part, MAX(next_offset) AS next_offset FROM {self._t(OFFSETS)} "
            f"WHERE grp = {_literal(group)} GROUP BY topic, part"
        )
        return {(r["topic"], int(r["part"])): int(r["next_offset"]) for r in rows}

    # --- tables ----------------------------------------------------------------------------
    def _ensure(self, name: str, columns: list[ColumnSchema], extra: list[str]) -> None:
        known = self._known.get(name)
        if known is None:
            try:
                table = self.client.get_table(f"{self.dataset}.{name}")
                known = {f.name: spelled(f.field_type, f.precision, f.scale) for f in table.schema}
            except NotFound:
                definition = [f"{_q(c.name)} {bigquery_type(c)}" for c in columns] + extra
                self._query(f"CREATE TABLE {self._t(name)} ({', '.join(definition)})")
                known = {c.name: bigquery_type(c) for c in columns}
            self._known[name] = known
        statements = evolve(
            self._t(name),
            known,
            columns,
            bigquery_type,
            widening=widens,
            quote=_q,
            alter=lambda t, c, wanted: f"ALTER TABLE {t} ALTER COLUMN {c} SET DATA TYPE {wanted}",
        )
        for statement in statements:
            self._query(statement)

    def _stage(
        self, name: str, columns: list[ColumnSchema], table: TableBatch, latest: bool
    ) -> str | None:
        """Stage the batch by a load job of NDJSON (written by DuckDB); its table, or None."""
        if not self.stager.stage(table, latest):
            return None
        path = self._tmp / f"{name}.json"
        self.stager.export(path, "json")
        schema = [bigquery.SchemaField(c.name, "STRING") for c in columns] + _META
        staging = f"{self.dataset}._sluiceway_staging_{name}"
        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
            schema=schema,
            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
        )
        try:
            with path.open("rb") as data:
                job = self.client.load_table_from_file(data, staging, job_config=config)
            job.result(timeout=300)
        except GoogleAPIError as exc:
            raise SinkUnavailable(f"BigQuery load job into {staging}: {exc}") from exc
        finally:
            path.unlink()
        return _q(staging)

    # --- writing ---------------------------------------------------------------------------
    def prepare(self, batch: LoadBatch, mode: Mode) -> None:
        """Parse and stage the batch while the one before is written (`Stager.prepare`)."""
        self.stager.prepare(batch, mode)

    def write(self, batch: LoadBatch, mode: Mode) -> None:
        try:
            for table in batch.tables.values():
                if mode in ("current", "both"):
                    self._current(table)
                if mode in ("history", "both"):
                    self._history(table)
        finally:
            self.stager.finish()
        if batch.offsets:
            # An append-only log, read back with MAX: one statement, nothing to merge.
            values = ", ".join(
                f"({_literal(batch.group)}, {_literal(t)}, {p}, {o})"
                for (t, p), o in batch.offsets.items()
            )
            self._query(
                f"INSERT INTO {self._t(OFFSETS)} (grp, topic, part, next_offset) VALUES {values}"
            )

    def _current(self, table: TableBatch) -> None:
        columns = list(table.schema.columns)
        keys = table.key_columns()
        name, guard = table.target_name(), table.target_name("__deletes")
        position = [f"{POSITION[0]} INT64", f"{POSITION[1]} INT64"]
        self._ensure(name, columns, position)
        self._ensure(guard, keys, position)
        staging = self._stage(name, columns, table, latest=True)
        if staging is None:
            return
        casts = ", ".join(
            f"{cast_expression(c, 's.' + _q(c.name))} AS {_q(c.name)}" for c in columns
        )
        on = " AND ".join(f"t.{_q(c.name)} = s.{_q(c.name)}" for c in keys)
        newer = (
            f"(s.__commit_lsn > t.{POSITION[0]} OR "
            f"(s.__commit_lsn = t.{POSITION[0]} AND s.__lsn > t.{POSITION[1]}))"
        )
        source = (
            f"(SELECT * FROM (SELECT {casts}, s.__op, s.__commit_lsn, s.__lsn, s.__unchanged "
            f"FROM {staging} s) s WHERE NOT EXISTS (SELECT 1 FROM {self._t(guard)} t "
            f"WHERE {on} AND NOT {newer}))"
        )
        sets = ", ".join(
            f"{_q(c.name)} = IF({_literal(c.name)} IN UNNEST(s.__unchanged), t.{_q(c.name)}, "
            f"s.{_q(c.name)})"
            for c in columns
        )
        names = ", ".join(_q(c.name) for c in columns)
        inserted = ", ".join(f"s.{_q(c.name)}" for c in columns)
        self._query(
            f"MERGE {self._t(name)} t USING {source} s ON {on} "
            f"WHEN MATCHED AND {newer} AND s.__op = 'd' THEN DELETE "
            f"WHEN MATCHED AND {newer} THEN UPDATE SET {sets}, "
            f"{POSITION[0]} = s.__commit_lsn, {POSITION[1]} = s.__lsn "
            f"WHEN NOT MATCHED AND s.__op <> 'd' THEN INSERT ({names}, {POSITION[0]}, "
            f"{POSITION[1]}) VALUES ({inserted}, s.__commit_lsn, s.__lsn)"
        )
        (deletes,) = self.stager.query("SELECT count(*) FROM staged WHERE __op = 'd'")[0]
        if not deletes:  # no delete to guard: a statement fewer (BigQuery bills each one)
            return
        key_casts = ", ".join(
            f"{cast_expression(c, 's.' + _q(c.name))} AS {_q(c.name)}" for c in keys
        )
        key_names = ", ".join(_q(c.name) for c in keys)
        key_values = ", ".join(f"s.{_q(c.name)}" for c in keys)
        self._query(
            f"MERGE {self._t(guard)} t USING (SELECT {key_casts}, s.__commit_lsn, s.__lsn "
            f"FROM {staging} s WHERE s.__op = 'd') s ON {on} "
            f"WHEN MATCHED AND {newer} THEN UPDATE SET {POSITION[0]} = s.__commit_lsn, "
            f"{POSITION[1]} = s.__lsn "
            f"WHEN NOT MATCHED THEN INSERT ({key_names}, {POSITION[0]}, {POSITION[1]}) "
            f"VALUES ({key_values}, s.__commit_lsn, s.__lsn)"
        )

    def _history(self, table: TableBatch) -> None:
        columns = list(table.schema.columns)
        name = table.target_name("__history")
        extra = [
            "_sluiceway_op STRING", f"{POSITION[0]} INT64", f"{POSITION[1]} INT64",
            "_sluiceway_ts_ms INT64", "_sluiceway_topic STRING", "_sluiceway_partition INT64",
            "_sluiceway_offset INT64", "_sluiceway_unchanged ARRAY<STRING>",
        ]  # fmt: skip
        self._ensure(name, columns, extra)
        staging = self._stage(name, columns, table, latest=False)
        if staging is None:
            return
        topic = _literal(table.raw.topic if table.raw is not None else table.changes[0].topic)
        casts = ", ".join(cast_expression(c, "s." + _q(c.name)) for c in columns)
        names = ", ".join(_q(c.name) for c in columns)
        self._query(
            f"INSERT INTO {self._t(name)} ({names}, _sluiceway_op, {POSITION[0]}, {POSITION[1]}, "
            "_sluiceway_ts_ms, _sluiceway_topic, _sluiceway_partition, _sluiceway_offset, "
            f"_sluiceway_unchanged) SELECT {casts}, s.__op, s.__commit_lsn, s.__lsn, s.__ts_ms, "
            f"{topic}, s.__partition, s.__offset, s.__unchanged FROM {staging} s "
            f"WHERE NOT EXISTS (SELECT 1 FROM {self._t(name)} h WHERE h._sluiceway_topic = "
            f"{topic} AND h._sluiceway_partition = s.__partition "
            "AND h._sluiceway_offset = s.__offset)"
        )
        view = self.views.statement(self._t(table.target_name("__scd2")), self._t(name), columns)
        if view is not None:
            self._query(view)

    def close(self) -> None:
        self.client.close()  # type: ignore[no-untyped-call]
        self.stager.close()
        with contextlib.suppress(OSError):
            self._tmp.rmdir()
