"""BigQuery as a target: load jobs into staging, then position-guarded MERGE."""

from loaders.bigquery.sink import BigQuerySink

__all__ = ["BigQuerySink"]
