"""DuckDB, the embedded default warehouse: a file in the state directory."""

from loaders.duckdb.sink import DuckDBSink

__all__ = ["DuckDBSink"]
