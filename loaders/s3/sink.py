"""The S3 sink: every change as Parquet, in objects named by topic partition and offset block.

Objects are ``<root>/<schema>/<table>/history/partition=<p>/block=<k>.parquet`` where block k
holds the partition's offsets ``[k*B, (k+1)*B)``. Names do not depend on where a batch began,
so a replay (a restarted loader, a backfilled window) rewrites the same objects with the same
rows instead of adding duplicates; a block filled over several batches is merged with what it
already holds. Batches are staged by DuckDB (`loaders.staging`), cast with DuckDB's exact
casts (`loaders.duckdb.types`) and written by DuckDB's Parquet writer; boto3 moves the files.
The consumer offsets are stored as a small JSON object after the data, so a crash in between
only causes an idempotent rewrite.

Each row also keeps the Kafka record it came from (``_sluiceway_key``, ``_sluiceway_event``),
so windows older than the topics' retention replay from here exactly (`loaders.s3.archive`).

Current state is read from the archive, not stored: `current_state_sql` gives the DuckDB query
(the newest change per key, deletes removed) over the Parquet files.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import orjson
import pyarrow as pa
from botocore.exceptions import BotoCoreError, ClientError

from loaders.arrow import binary_array, int_array
from loaders.base import POSITION, LoadBatch, Mode, Sink, TableBatch
from loaders.duckdb.types import cast_expression
from loaders.sql import Dialect, literal, q, scd2_select
from loaders.staging import Stager
from sluiceway.connect import s3_client
from sluiceway.errors import SinkFatal, SinkUnavailable
from sluiceway.settings import S3Settings
from streaming.events import ColumnSchema

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["BLOCK", "S3Sink", "current_state_sql", "scd2_sql"]

BLOCK = 100_000  # offsets per object


def current_state_sql(files: str, key: list[str], columns: list[str]) -> str:
    """DuckDB SQL for the current state of a table from its history files (a glob).

    The newest change per key wins; a column its change left TOAST-unchanged takes the last
    value an earlier change of that key carried. Files of different shapes (a column added,
    widened, dropped) are read together by column name.
    """
    keys = ", ".join(q(k) for k in key)
    order = f"ORDER BY {POSITION[0]}, {POSITION[1]}"
    window = f"(PARTITION BY {keys} {order} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"
    values = ", ".join(
        f"CASE WHEN list_contains(_sluiceway_unchanged, {literal(c)}) THEN last_value("
        f"CASE WHEN list_contains(_sluiceway_unchanged, {literal(c)}) THEN NULL ELSE {q(c)} END "
        f"IGNORE NULLS) OVER {window} ELSE {q(c)} END AS {q(c)}"
        for c in columns
    )
    return (
        f"SELECT * EXCLUDE (rank) FROM (SELECT {values}, _sluiceway_op, row_number() OVER "
        f"(PARTITION BY {keys} ORDER BY {POSITION[0]} DESC, {POSITION[1]} DESC) AS rank "
        f"FROM read_parquet('{files}', union_by_name = true)) "
        "WHERE rank = 1 AND _sluiceway_op <> 'd'"
    )


def scd2_sql(files: str, columns: list[ColumnSchema]) -> str:
    """DuckDB SQL for the SCD2 form of a table's history files (`loaders.sql.scd2_select`)."""
    dialect = Dialect(
        cast=cast_expression,
        contains=lambda items, literal: f"list_contains({items}, {literal})",
        temp_table=lambda name, select: [],
        from_ms=lambda ms: f"to_timestamp({ms} / 1000.0)",
    )
    return scd2_select(dialect, f"read_parquet('{files}', union_by_name = true)", columns)


class S3Sink(Sink):
    """Archives change events into S3 as Parquet (history mode)."""

    name = "s3"

    def __init__(self, s3: S3Settings, root: str) -> None:
        self.client: S3Client = s3_client(s3)
        self.bucket = s3.bucket
        self.root = root.strip("/")
        self.duck = duckdb.connect()
        self.stager = Stager(self.duck)
        self._tmp = Path(tempfile.mkdtemp(prefix="sluiceway-s3-"))

    def _key(self, table: TableBatch, partition: int, block: int) -> str:
        schema, name = table.table
        return (
            f"{self.root}/{schema}/{name}/history/partition={partition}/block={block:08d}.parquet"
        )

    def stored_offsets(self, group: str) -> dict[tuple[str, int], int]:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._offsets_key(group))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return {}
            raise SinkUnavailable(f"S3: {exc}") from exc
        stored = orjson.loads(body["Body"].read())
        return {(t, int(p)): o for t, parts in stored.items() for p, o in parts.items()}

    def _offsets_key(self, group: str) -> str:
        return f"{self.root}/_sluiceway_offsets/{group}.json"

    def prepare(self, batch: LoadBatch, mode: Mode) -> None:
        """Parse and stage the batch while the one before is written (`Stager.prepare`):
        every change, since the archive keeps history whatever the mode."""
        if mode != "current":
            self.stager.prepare(batch, "history")

    def write(self, batch: LoadBatch, mode: Mode) -> None:
        if mode == "current":
            raise SinkFatal(
                "the S3 target keeps history (the archive); read current state with "
                "loaders.s3.current_state_sql, or load current state into a warehouse target"
            )
        try:
            for table in batch.tables.values():
                self._history(table)
            if batch.offsets:
                stored = self.stored_offsets(batch.group)
                stored.update(batch.offsets)
                nested: dict[str, dict[str, int]] = defaultdict(dict)
                for (topic, partition), offset in stored.items():
                    nested[topic][str(partition)] = offset
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=self._offsets_key(batch.group),
                    Body=orjson.dumps(nested),
                )
        except (BotoCoreError, ClientError) as exc:
            raise SinkUnavailable(f"S3: {exc}") from exc
        finally:
            self.stager.finish()

    def _history(self, table: TableBatch) -> None:
        if not self.stager.stage(table, latest=False):
            return
        columns = list(table.schema.columns)
        values = ", ".join(
            f"{cast_expression(c, 's.' + q(c.name))} AS {q(c.name)}" for c in columns
        )
        topic = (table.raw.topic if table.raw is not None else table.changes[0].topic).replace(
            "'", "''"
        )
        meta = (
            "s.__op AS _sluiceway_op, s.__commit_lsn AS _sluiceway_commit_lsn, "
            "s.__lsn AS _sluiceway_lsn, s.__ts_ms AS _sluiceway_ts_ms, "
            f"'{topic}' AS _sluiceway_topic, s.__partition AS _sluiceway_partition, "
            "s.__offset AS _sluiceway_offset, s.__unchanged AS _sluiceway_unchanged"
        )
        # The record itself travels with the typed row: the archive can be replayed into any
        # target, exactly, once Kafka's retention has dropped it (`loaders.s3.archive`).
        raw = table.raw
        self.duck.register(
            "events",
            pa.table(
                {
                    "p": int_array(raw.partitions if raw else [], pa.int32()),
                    "o": int_array(raw.offsets if raw else [], pa.int64()),
                    "k": binary_array(raw.keys if raw else []),
                    "v": binary_array(raw.values if raw else []),
                }
            ),
        )
        self.duck.execute(
            f"CREATE OR REPLACE TEMP TABLE typed AS SELECT {values}, {meta}, "
            "e.k AS _sluiceway_key, e.v AS _sluiceway_event FROM staged s "
            "LEFT JOIN events e ON e.p = s.__partition AND e.o = s.__offset"
        )
        self.duck.unregister("events")
        blocks = self.duck.execute(
            f"SELECT DISTINCT _sluiceway_partition, _sluiceway_offset // {BLOCK} FROM typed "
            "ORDER BY 1, 2"
        ).fetchall()
        for partition, block in blocks:
            key = self._key(table, partition, block)
            local = self._tmp / "block.parquet"
            merged = self._tmp / "merged.parquet"
            self.duck.execute(
                "CREATE OR REPLACE TEMP TABLE fresh AS SELECT * FROM typed WHERE "
                f"_sluiceway_partition = {partition} AND _sluiceway_offset // {BLOCK} = {block}"
            )
            if self._download(key, local):
                # The block already holds earlier offsets: keep those not in this batch.
                self.duck.execute(
                    f"COPY (SELECT * FROM read_parquet('{local}') WHERE _sluiceway_offset NOT IN "
                    f"(SELECT _sluiceway_offset FROM fresh) UNION ALL BY NAME SELECT * FROM fresh "
                    f"ORDER BY _sluiceway_offset) TO '{merged}' (FORMAT parquet)"
                )
            else:
                self.duck.execute(
                    f"COPY (SELECT * FROM fresh ORDER BY _sluiceway_offset) TO '{merged}' "
                    "(FORMAT parquet)"
                )
            self.client.upload_file(str(merged), self.bucket, key)

    def _download(self, key: str, path: Path) -> bool:
        try:
            self.client.download_file(self.bucket, key, str(path))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                return False
            raise
        return True

    def close(self) -> None:
        self.stager.close()
        self.duck.close()
        with contextlib.suppress(OSError):
            for path in self._tmp.iterdir():
                path.unlink()
            self._tmp.rmdir()
