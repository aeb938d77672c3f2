"""Pipeline specifications: the demo loads, mistakes are named with field, value and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluiceway.errors import ConfigError
from sluiceway.pipeline import PIPELINES_DIR, TableSelection, list_pipelines, load_pipeline


def test_every_shipped_pipeline_loads() -> None:
    pipelines = list_pipelines()
    assert "shop" in {p.name for p in pipelines}
    shop = load_pipeline("shop")
    assert shop.slot == "sluiceway_shop" and shop.topic_prefix == "shop"
    assert shop.source.tables.matches("public", "orders")
    assert not shop.source.tables.matches("public", "audit_log")
    assert PIPELINES_DIR.is_dir()


def test_selection_patterns() -> None:
    selection = TableSelection(include=["public.*", "sales.order?"], exclude=["public.tmp_*"])
    assert selection.matches("public", "customers")
    assert selection.matches("sales", "orders")
    assert not selection.matches("public", "tmp_import")
    with pytest.raises(ValueError, match="must be schema-qualified"):
        TableSelection(include=["customers"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: Shop!\nsource: {kind: postgres}\n", "must be lowercase letters"),
        ("name: x\nsource: {kind: postgres, snapshot_workers: 0}\n", "source.snapshot_workers = 0"),
        ("name: x\nsource: {kind: oracle}\n", "source.kind = oracle"),
        (
            "name: x\nsource: {kind: postgres}\ntopics: {partitons: 3}\n",
            "topics.partitons: unknown",
        ),
        ("name: x\n", "source: missing; add source"),
        ("- a list\n", "must hold a mapping"),
        ("name: [unclosed\n", "is not valid YAML"),
        (
            "name: x\nsource: {kind: mysql}\ntransforms: [{type: mask, fieldz: [a]}]\n",
            "transforms.0.fieldz: unknown setting",
        ),
        (
            "name: x\nsource: {kind: mysql}\ntransforms: [{type: cast, fields: {a: int128}}]\n",
            "transforms.0.fields.a = int128",
        ),
        (
            "name: x\nsource: {kind: mysql}\ntransforms: [{type: route, regex: '(', "
            "replacement: x}]\n",
            "regex '(': missing )",
        ),
        ("name: x\nsource: {kind: mysql}\ntransforms: [{type: zip}]\n", "transforms.0.type = zip"),
        ("name: x\nsource: {kind: mysql, zero_dates: keep}\n", "source.zero_dates = keep"),
        (
            "name: x\nsource: {kind: query, url: 'sqlite:///a.db', tables: [{table: main.t, "
            "mode: timestamp}]}\n",
            "mode timestamp needs timestamp_column",
        ),
        (
            "name: x\nsource: {kind: mysql}\ntransforms: [{type: flatten}]\n"
            "targets: [{kind: duckdb}]\n",
            "flatten writes plain rows",
        ),
    ],
)
def test_mistakes_are_named(tmp_path: Path, text: str, expected: str) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_pipeline(spec)
    assert expected in str(info.value)
    assert str(spec) in str(info.value)


def test_unknown_pipeline_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"known: .*shop"):
        load_pipeline("nope")


def test_target_types_spelled_as_the_targets_report_them() -> None:
    """A reopened target must see its own columns as unchanged (no spurious type change)."""
    import duckdb

    from loaders.duckdb.types import duckdb_type
    from streaming.events import ColumnSchema

    columns = [
        ColumnSchema("a", "int16", "int2"), ColumnSchema("b", "float32", "float4"),
        ColumnSchema("c", "decimal", "numeric(14,4)", precision=14, scale=4),
        ColumnSchema("d", "timestamptz", "timestamptz"), ColumnSchema("e", "time", "timetz"),
        ColumnSchema("f", "array", "_timestamptz", items="timestamptz"),
        ColumnSchema("g", "json", "jsonb"), ColumnSchema("h", "bytes", "bytea"),
    ]  # fmt: skip
    conn = duckdb.connect()
    conn.execute(
        "CREATE TABLE t (" + ", ".join(f"{c.name} {duckdb_type(c)}" for c in columns) + ")"
    )
    reported = dict(
        conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 't'"
        ).fetchall()
    )
    assert reported == {c.name: duckdb_type(c) for c in columns}


def test_a_source_without_kind_is_postgres(tmp_path: Path) -> None:
    spec = tmp_path / "p.yaml"
    spec.write_text("name: p\nsource: {database: shop}\n")
    assert load_pipeline(spec).source.kind == "postgres"
