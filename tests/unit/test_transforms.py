"""Capture-time transforms on real envelopes: values, keys, shapes and errors."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from sluiceway.errors import ConfigError
from sluiceway.pipeline import Pipeline
from streaming.events import UNAVAILABLE, ColumnSchema, TableSchema
from streaming.transforms import Record, TransformChain, TransformError

SHAPE = TableSchema(
    "shop",
    "customers",
    (
        ColumnSchema("id", "int64", "bigint", key=True),
        ColumnSchema("email", "string", "varchar(80)"),
        ColumnSchema("card", "string", "varchar(19)"),
        ColumnSchema("balance", "decimal", "decimal(10,2)", precision=10, scale=2),
        ColumnSchema("code", "string", "varchar(8)"),
    ),
)


def chain(*transforms: dict[str, Any]) -> TransformChain:
    return TransformChain(Pipeline(name="p", source={"kind": "mysql"}, transforms=list(transforms)))


def record(op: str = "u", **after: Any) -> Record:
    row = {"id": 7, "email": "ada@example.org", "card": "4111111111111111", "balance": "12.50",
           "code": "42", **after}  # fmt: skip
    before = dict(row, balance="10.00")
    value = {
        "before": before if op != "c" else None,
        "after": row if op != "d" else None,
        "source": {"connector": "mysql", "db": "shop", "schema_id": SHAPE.id, "ts_ms": 5},
        "op": op,
        "ts_ms": 6,
    }
    return Record("p.shop.customers", {"id": 7}, value, "shop", "customers")


def test_hash_and_mask_every_image_and_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SALT", "s3cret")
    plan = chain(
        {"type": "hash", "fields": ["email", "id"], "salt_env": "SALT"},
        {"type": "mask", "fields": ["card"], "length": 12, "keep_last": 4},
    ).plan(SHAPE)
    out = plan.apply(record())
    assert out is not None and out.value is not None
    digest = hashlib.sha256(b"s3cretada@example.org").hexdigest()
    assert out.value["after"]["email"] == out.value["before"]["email"] == digest
    assert out.key == {"id": hashlib.sha256(b"s3cret7").hexdigest()}
    assert out.value["after"]["card"] == "************1111"
    types = {c.name: c.type for c in plan.output.columns}
    assert types["email"] == types["card"] == types["id"] == "string"
    assert out.value["source"]["schema_id"] == plan.output.id != SHAPE.id


def test_placeholders_for_unchanged_values_are_left_alone() -> None:
    plan = chain({"type": "mask", "fields": ["card"]}).plan(SHAPE)
    out = plan.apply(record(card=UNAVAILABLE))
    assert out is not None and out.value is not None
    assert out.value["after"]["card"] == UNAVAILABLE


def test_drop_keep_rename_change_rows_shape_and_unchanged_lists() -> None:
    plan = chain(
        {"type": "drop", "fields": ["code"]},
        {"type": "rename", "fields": {"email": "mail", "id": "customer_id"}},
        {"type": "keep", "fields": ["mail"]},
    ).plan(SHAPE)
    incoming = record()
    assert incoming.value is not None
    incoming.value["unchanged"] = ["email", "code"]
    out = plan.apply(incoming)
    assert out is not None and out.value is not None
    assert out.value["after"] == {"customer_id": 7, "mail": "ada@example.org"}
    assert out.key == {"customer_id": 7} and out.value["unchanged"] == ["mail"]
    assert [c.name for c in plan.output.columns] == ["customer_id", "mail"]
    assert plan.output.key == ("customer_id",)


def test_key_fields_cannot_be_dropped_and_unknown_fields_are_named() -> None:
    with pytest.raises(ConfigError, match="would remove key field 'id'"):
        chain({"type": "drop", "fields": ["id"]}).plan(SHAPE)
    with pytest.raises(ConfigError, match=r"names field 'mail'.*it has: id, email, card"):
        chain({"type": "mask", "fields": ["mail"]}).plan(SHAPE)
    with pytest.raises(ConfigError, match="NO_SUCH_SALT"):
        chain({"type": "hash", "fields": ["email"], "salt_env": "NO_SUCH_SALT"})
    with pytest.raises(ConfigError, match="cannot import"):
        chain({"type": "python", "callable": "no_such_module:f"})


def test_cast_converts_exactly_or_fails_the_record() -> None:
    plan = chain({"type": "cast", "fields": {"code": "int64", "balance": "float64"}}).plan(SHAPE)
    out = plan.apply(record())
    assert out is not None and out.value is not None
    assert out.value["after"]["code"] == 42 and out.value["after"]["balance"] == 12.5
    assert {c.name: c.type for c in plan.output.columns}["code"] == "int64"
    with pytest.raises(TransformError, match="cast of field 'code': 'x1' is not a number"):
        plan.apply(record(code="x1"))
    with pytest.raises(TransformError, match="not an integer"):
        plan.apply(record(code="1.5"))


def test_filter_sees_decimals_as_numbers_and_deletes_by_their_before_image() -> None:
    plan = chain({"type": "filter", "where": "balance >= 12"}).plan(SHAPE)
    assert plan.apply(record()) is not None
    assert plan.apply(record(balance="11.99")) is None
    assert plan.apply(record("d")) is None  # the before image has balance 10.00


def test_route_lineage_and_flatten() -> None:
    plan = chain(
        {"type": "route", "regex": r"p\.shop\.(.*)", "replacement": "lake.$1"},
        {"type": "lineage", "into": "headers"},
        {"type": "lineage", "into": "fields", "prefix": "_l_"},
        {"type": "flatten"},
    ).plan(SHAPE)
    out = plan.apply(record("d"))
    assert out is not None and out.value is not None
    assert out.topic == "lake.customers"
    headers = dict(out.headers)
    assert headers["sluiceway.pipeline"] == b"p"
    assert headers["sluiceway.source"] == b"mysql/shop.shop.customers"
    assert out.value["__deleted"] is True and out.value["__op"] == "d"
    assert out.value["email"] == "ada@example.org" and out.value["_l_pipeline"] == "p"
    assert "_l_captured_at" in [c.name for c in plan.output.columns]
    dropped = chain({"type": "flatten", "deletes": "drop"}).plan(SHAPE)
    assert dropped.apply(record("d")) is None


def upper_email(record: Record) -> Record | None:
    """A custom transform for the test below."""
    assert record.value is not None
    if record.value["after"]["code"] == "skip":
        return None
    record.value["after"]["email"] = record.value["after"]["email"].upper()
    return record


def test_python_callables_transform_or_drop() -> None:
    plan = chain({"type": "python", "callable": "tests.unit.test_transforms:upper_email"}).plan(
        SHAPE
    )
    out = plan.apply(record())
    assert out is not None and out.value is not None
    assert out.value["after"]["email"] == "ADA@EXAMPLE.ORG"
    assert plan.apply(record(code="skip")) is None
    with pytest.raises(TransformError, match="upper_email: AttributeError"):
        plan.apply(record(email=None))


def test_tables_limit_where_a_transform_applies() -> None:
    plan = chain({"type": "mask", "fields": ["email"], "tables": ["other.*"]}).plan(SHAPE)
    out = plan.apply(record())
    assert out is not None and out.value is not None
    assert out.value["after"]["email"] == "ada@example.org"
