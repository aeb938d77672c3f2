"""Clients for every service, built from settings: the one place connections are made.

The same functions reach the local stack and real cloud services; only settings differ.
Each returns the real client library's object (psycopg2, PyMySQL, confluent-kafka, boto3,
snowflake-connector-python, google-cloud-bigquery).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sluiceway.settings import (
    BigQuerySettings,
    KafkaSettings,
    MariaDBSettings,
    PostgresSettings,
    S3Settings,
    SnowflakeSettings,
)

if TYPE_CHECKING:
    import psycopg2.extensions
    import pymysql.connections
    from google.cloud import bigquery
    from mypy_boto3_s3 import S3Client

__all__ = [
    "bigquery_client",
    "kafka_admin",
    "mariadb_connection",
    "postgres_connection",
    "s3_client",
    "snowflake_connection",
]


def postgres_connection(
    pg: PostgresSettings, *, database: str | None = None, **kwargs: Any
) -> psycopg2.extensions.connection:
    """A psycopg2 connection (pass connection_factory for a replication connection). Named
    ``sluiceway`` in pg_stat_activity, so a migration fence closes applications' sessions and
    not Sluiceway's own."""
    import psycopg2

    kwargs.setdefault("connect_timeout", 5)
    kwargs.setdefault("application_name", "sluiceway")
    conn: psycopg2.extensions.connection = psycopg2.connect(pg.dsn(database), **kwargs)
    return conn


def mariadb_connection(
    db: MariaDBSettings, *, database: str | None = None, **kwargs: Any
) -> pymysql.connections.Connection[Any]:
    """A PyMySQL connection, utf8mb4."""
    import pymysql

    return pymysql.connect(
        host=db.host,
        port=db.port,
        user=db.user,
        password=db.password.get_secret_value(),
        database=database or db.database,
        charset="utf8mb4",
        connect_timeout=5,
        **kwargs,
    )


def kafka_admin(kafka: KafkaSettings) -> Any:
    """A confluent-kafka AdminClient."""
    from confluent_kafka.admin import AdminClient

    return AdminClient(kafka.client_config())


def s3_client(s3: S3Settings) -> S3Client:
    """A boto3 S3 client (path-style addressing, which SeaweedFS and MinIO need)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=s3.endpoint(),
        region_name=s3.region,
        aws_access_key_id=s3.access_key_id,
        aws_secret_access_key=s3.secret_access_key.get_secret_value(),
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )


def snowflake_connection(sf: SnowflakeSettings, **kwargs: Any) -> Any:
    """A snowflake-connector-python connection (over HTTP to fakesnow locally)."""
    import snowflake.connector

    return snowflake.connector.connect(**sf.connect_args(), **kwargs)


def bigquery_client(bq: BigQuerySettings) -> bigquery.Client:
    """A google-cloud-bigquery client: anonymous against a local endpoint, else real auth."""
    from google.api_core.client_options import ClientOptions
    from google.cloud import bigquery

    endpoint = bq.endpoint()
    if bq.credentials_file is not None:
        from google.oauth2 import service_account

        credentials = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
            str(bq.credentials_file)
        )
    elif endpoint is not None:
        from google.auth.credentials import AnonymousCredentials

        credentials = AnonymousCredentials()  # type: ignore[no-untyped-call]
    else:
        credentials = None
    options = ClientOptions(api_endpoint=endpoint) if endpoint else None
    return bigquery.Client(
        project=bq.project, credentials=credentials, client_options=options, location=bq.location
    )
