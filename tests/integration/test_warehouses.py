"""S3 (SeaweedFS), Snowflake (fakesnow) and BigQuery (local-bigquery) through their real clients."""

from __future__ import annotations

import io
import json
from decimal import Decimal

import pytest
from google.cloud import bigquery

from sluiceway.connect import bigquery_client, s3_client, snowflake_connection
from sluiceway.settings import Settings
from stack.manager import Stack
from tests.integration.conftest import require

pytestmark = pytest.mark.integration


def test_s3_put_get_list_multipart(settings: Settings, stack: Stack, unique: str) -> None:
    require(stack, "seaweedfs")
    s3 = s3_client(settings.s3)
    bucket = unique
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="a/one.json", Body=b'{"id": 1}')
    s3.put_object(Bucket=bucket, Key="a/two.json", Body=b'{"id": 2}')
    assert s3.get_object(Bucket=bucket, Key="a/one.json")["Body"].read() == b'{"id": 1}'
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="a/")
    assert [o["Key"] for o in listed["Contents"]] == ["a/one.json", "a/two.json"]

    parts = [bytes([65 + i]) * (5 * 1024 * 1024) for i in range(2)] + [b"tail"]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="big.bin")
    etags = []
    for number, part in enumerate(parts, start=1):
        answer = s3.upload_part(
            Bucket=bucket, Key="big.bin", PartNumber=number, UploadId=upload["UploadId"], Body=part
        )
        etags.append({"PartNumber": number, "ETag": answer["ETag"]})
    s3.complete_multipart_upload(
        Bucket=bucket, Key="big.bin", UploadId=upload["UploadId"], MultipartUpload={"Parts": etags}
    )
    assert s3.get_object(Bucket=bucket, Key="big.bin")["Body"].read() == b"".join(parts)

    for key in ("a/one.json", "a/two.json", "big.bin"):
        s3.delete_object(Bucket=bucket, Key=key)
    s3.delete_bucket(Bucket=bucket)


def test_snowflake_create_insert_merge_select(
    settings: Settings, stack: Stack, unique: str
) -> None:
    require(stack, "fakesnow")
    conn = snowflake_connection(settings.snowflake)
    try:
        cur = conn.cursor()
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {unique}")
        cur.execute(f"CREATE SCHEMA IF NOT EXISTS {unique}.public")
        cur.execute(f"USE DATABASE {unique}")
        cur.execute(f"USE SCHEMA {unique}.public")
        cur.execute("CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR, price NUMBER(12, 2))")
        cur.executemany(
            "INSERT INTO items VALUES (%s, %s, %s)",
            [(1, "kettle", Decimal("19.99")), (2, "teapot", Decimal("35.00"))],
        )
        cur.execute("CREATE TABLE changes (id INT, name VARCHAR, price NUMBER(12, 2), op VARCHAR)")
        cur.executemany(
            "INSERT INTO changes VALUES (%s, %s, %s, %s)",
            [
                (2, "teapot", Decimal("31.50"), "u"),
                (3, "cup", Decimal("4.25"), "c"),
                (1, None, None, "d"),
            ],
        )
        cur.execute(
            """
            MERGE INTO items t USING changes s ON t.id = s.id
            WHEN MATCHED AND s.op = 'd' THEN DELETE
            WHEN MATCHED THEN UPDATE SET name = s.name, price = s.price
            WHEN NOT MATCHED AND s.op <> 'd' THEN
                INSERT (id, name, price) VALUES (s.id, s.name, s.price)
            """
        )
        cur.execute("SELECT id, name, price FROM items ORDER BY id")
        assert cur.fetchall() == [(2, "teapot", Decimal("31.50")), (3, "cup", Decimal("4.25"))]
    finally:
        conn.close()


def test_bigquery_dataset_load_job_query(settings: Settings, stack: Stack, unique: str) -> None:
    require(stack, "bigquery")
    client = bigquery_client(settings.bigquery)
    dataset = client.create_dataset(f"{settings.bigquery.project}.{unique}")
    table_id = f"{dataset.project}.{dataset.dataset_id}.orders"
    rows = [
        {"id": 1, "amount": "10.50", "status": "paid"},
        {"id": 2, "amount": "99999999999999.99", "status": "new"},
        {"id": 3, "amount": "0.01", "status": "paid"},
    ]
    job = client.load_table_from_file(
        io.BytesIO("\n".join(json.dumps(r) for r in rows).encode()),
        table_id,
        job_config=bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
            schema=[
                bigquery.SchemaField("id", "INT64", mode="REQUIRED"),
                bigquery.SchemaField("amount", "NUMERIC"),
                bigquery.SchemaField("status", "STRING"),
            ],
        ),
    )
    job.result(timeout=60)
    result = client.query(
        f"SELECT status, COUNT(*) AS n, SUM(amount) AS total FROM `{table_id}` "
        "GROUP BY status ORDER BY status"
    ).result(timeout=60)
    assert [(r["status"], r["n"], r["total"]) for r in result] == [
        ("new", 1, Decimal("99999999999999.99")),
        ("paid", 2, Decimal("10.51")),
    ]
    client.delete_dataset(dataset, delete_contents=True)
