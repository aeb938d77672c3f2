"""Reading the S3 archive back as Kafka records: replays beyond the topics' retention.

The S3 target keeps every change with the record it came from (key and value bytes, topic,
partition, offset). `ArchiveReader.records` returns the archived records of one topic
partition below an offset (what Kafka no longer holds) whose commit time falls in a window, in
offset order, ready for the loader's normal path — so a replay from the archive loads exactly
what a replay from Kafka would have.
"""

from __future__ import annotations

import contextlib
import tempfile
from typing import TYPE_CHECKING

import duckdb
from botocore.exceptions import BotoCoreError, ClientError

from sluiceway.connect import s3_client
from sluiceway.errors import SinkUnavailable
from sluiceway.settings import S3Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["ArchiveReader"]


class ArchiveReader:
    """The archive an S3 target of a pipeline wrote (``root``: its key prefix)."""

    def __init__(self, s3: S3Settings, root: str) -> None:
        self.client: S3Client = s3_client(s3)
        self.bucket = s3.bucket
        self.root = root.strip("/")

    def records(
        self, schema: str, table: str, partition: int, below: int, start_ms: int, end_ms: int
    ) -> list[tuple[int, bytes | None, bytes]]:
        """(offset, key, value) of the archived records of ``schema.table``'s topic partition
        with offsets under ``below`` and commit times in [start_ms, end_ms).

        Raises:
            SinkUnavailable: S3 cannot be read.
        """
        prefix = f"{self.root}/{schema}/{table}/history/partition={partition}/"
        try:
            listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
            keys = [o["Key"] for o in listed.get("Contents", [])]
            if not keys:
                return []
            with tempfile.TemporaryDirectory(prefix="sluiceway-archive-") as tmp:
                for number, key in enumerate(sorted(keys)):
                    self.client.download_file(self.bucket, key, f"{tmp}/{number:06d}.parquet")
                conn = duckdb.connect()
                try:
                    if "_sluiceway_event" not in {
                        r[0]
                        for r in conn.execute(
                            f"DESCRIBE SELECT * FROM read_parquet('{tmp}/*.parquet', "
                            "union_by_name = true)"
                        ).fetchall()
                    }:
                        return []  # archived before records were kept with the rows
                    rows = conn.execute(
                        f"SELECT _sluiceway_offset, _sluiceway_key, _sluiceway_event "
                        f"FROM read_parquet('{tmp}/*.parquet', union_by_name = true) "
                        "WHERE _sluiceway_offset < ? AND _sluiceway_ts_ms >= ? "
                        "AND _sluiceway_ts_ms < ? AND _sluiceway_event IS NOT NULL "
                        "ORDER BY _sluiceway_offset",
                        [below, start_ms, end_ms],
                    ).fetchall()
                finally:
                    conn.close()
        except (BotoCoreError, ClientError) as exc:
            raise SinkUnavailable(f"S3 archive {self.root}: {exc}") from exc
        return [(int(o), bytes(k) if k is not None else None, bytes(v)) for o, k, v in rows]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
