"""The bulk path: raw change events parsed, deduplicated and staged by DuckDB, not Python.

Per-record Python is what bounds a loader (an envelope parsed into objects costs more than
the target's own write), so SQL targets hand the batch's raw Kafka values to an engine as one
Arrow string column. DuckDB parses each envelope once (``json_transform`` into a struct of
strings: numbers keep their exact text, nested values their JSON), keeps the newest change of
each key, and yields the staging shape `loaders.sql.staged_values` builds in Python — so the
statements that apply it are the same on both paths. The DuckDB sink runs this in its own
database; other targets (PostgreSQL) get the staged rows from an in-memory `BulkParser`.
"""

from __future__ import annotations

from typing import Any

import duckdb
import orjson
import pyarrow as pa

from loaders.base import RawRecords
from sluiceway.errors import SinkFatal
from streaming.events import TableSchema

__all__ = ["CHECK", "BulkParser", "bulk_applies", "raw_arrow", "raw_select"]

# Run on the staged table: the first record the bulk path cannot take, if any.
CHECK = "SELECT __partition, __offset, __python FROM staged WHERE __op IS NULL OR __python LIMIT 1"


def bulk_applies(topic: str, found: tuple[Any, ...] | None) -> bool:
    """Whether the staged rows stand (`CHECK` found nothing), or Python must parse the batch
    (Connect JSON, TOAST-unchanged columns to carry over from an older change of the key).

    Raises:
        SinkFatal: a record is not a change event (as the Python path would).
    """
    if found is None:
        return True
    if found[2]:
        return False
    raise SinkFatal(f"{topic}[{found[0]}]@{found[1]} is not a change event")


def raw_arrow(raw: RawRecords) -> pa.Table:
    """The raw records as an Arrow table: ``__partition``, ``__offset``, ``__value``."""
    return pa.table(
        {
            "__partition": pa.array(raw.partitions, pa.int32()),
            "__offset": pa.array(raw.offsets, pa.int64()),
            "__value": pa.array(raw.values, pa.string()),
        }
    )


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def raw_select(schema: TableSchema, raw: str, latest: bool) -> str:
    """SQL turning raw envelopes (``raw``: ``__partition``, ``__offset``, ``__value``) into the
    staging shape `loaders.sql.staged_values` builds in Python: each column as exact text
    (``after``, or ``before`` for deletes), then the change's metadata. Each envelope is
    parsed once, by ``json_transform`` into a struct of strings (numbers keep their exact
    text, nested values their JSON). ``latest`` keeps only the newest change of each key, by
    position. A record that is not a change event stays in with a NULL ``__op``, and
    ``__python`` marks records the Python path must take: `CHECK` finds either."""
    columns = schema.columns
    row = {c.name: "VARCHAR" for c in columns}
    structure = {
        "op": "VARCHAR",
        "ts_ms": "BIGINT",
        "source": {"commit_lsn": "BIGINT", "lsn": "BIGINT"},
        "after": row,
        "before": row,
        "unchanged": "VARCHAR",
        "schema": "VARCHAR",  # only a Connect JSON envelope has it at the top
    }
    spec = orjson.dumps(structure).decode().replace("'", "''")
    values = ", ".join(
        f"CASE WHEN x.op = 'd' THEN x.before.{_quote(c.name)} "
        f"ELSE x.after.{_quote(c.name)} END AS {_quote(c.name)}"
        for c in columns
    )
    select = (
        f"SELECT {values}, x.op AS __op, COALESCE(x.source.commit_lsn, 0) AS __commit_lsn, "
        "COALESCE(x.source.lsn, 0) AS __lsn, CAST([] AS VARCHAR[]) AS __unchanged, "
        "__partition, __offset, COALESCE(x.ts_ms, 0) AS __ts_ms, "
        'x.unchanged IS NOT NULL OR x."schema" IS NOT NULL AS __python '
        f"FROM (SELECT __partition, __offset, json_transform(__value, '{spec}') AS x "
        f"FROM {raw}) WHERE x.op IS DISTINCT FROM 't'"
    )
    if not latest:
        return select
    keys = ", ".join(_quote(c.name) for c in columns if c.key)
    return (
        f"SELECT * FROM ({select}) QUALIFY row_number() OVER (PARTITION BY {keys} "
        "ORDER BY __commit_lsn DESC, __lsn DESC, __partition DESC, __offset DESC) = 1"
    )


class BulkParser:
    """An in-memory DuckDB that turns raw records into staged rows for another target."""

    def __init__(self) -> None:
        self.conn = duckdb.connect()

    def staged(self, schema: TableSchema, raw: RawRecords, latest: bool) -> pa.Table | None:
        """The staged rows, every column as text, ``__unchanged`` as an empty list literal
        (``{}``) so targets that take text for arrays read it as they read Python's; None if
        Python must parse the batch (`bulk_applies`).

        Raises:
            SinkFatal: a record is not a change event.
        """
        self.conn.register("raw", raw_arrow(raw))
        try:
            self.conn.execute(
                f"CREATE OR REPLACE TEMP TABLE staged AS {raw_select(schema, 'raw', latest)}"
            )
        except duckdb.Error as exc:
            raise SinkFatal(f"{raw.topic}: the batch does not parse: {exc}") from exc
        finally:
            self.conn.unregister("raw")
        if not bulk_applies(raw.topic, next(iter(self.conn.execute(CHECK).fetchall()), None)):
            return None
        return self.conn.sql(
            "SELECT * EXCLUDE (__python) REPLACE ('{}' AS __unchanged) FROM staged"
        ).to_arrow_table()

    def close(self) -> None:
        self.conn.close()
