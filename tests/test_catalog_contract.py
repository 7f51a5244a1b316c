"""The catalog contract: each malformed case gets its rule and a clear message."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest

from itemsage_core.contracts.catalog_contract import (
    CONTRACT_COLUMNS,
    TEXT_FEATURES,
    catalog_schema,
    validate_catalog,
)
from itemsage_core.errors import ContractError

DIM = 4


def vec(x=0.5, dim=DIM):
    return [x] * dim


def catalog(**overrides):
    rows = {
        "product_id": ["a", "b", "c"],
        "title": ["red dress", "blue shirt", "green mug"],
        "image_embeddings": [[vec()], [], None],
    }
    rows.update(overrides)
    return pa.table(rows)


def reasons_by_id(result):
    return {r["product_id"]: r["reason"] for r in result.rejected.to_pylist()}


def test_valid_catalog_conforms_to_the_contract_schema():
    result = validate_catalog(catalog(price=[1.0, 2.0, 3.0]), image_dim=DIM)
    assert result.report.rows == 3 and result.report.valid == 3 and result.report.rejected == 0
    assert result.valid.schema == catalog_schema(pa.schema([("price", pa.float64())]))
    assert len(TEXT_FEATURES) == 12
    # Absent optional features are null; a plain string in a list feature becomes a 1-item list.
    assert result.valid.column("brand").null_count == 3


def test_string_given_for_list_feature_becomes_one_item_list():
    result = validate_catalog(catalog(colors=["red", None, "green"]), image_dim=DIM)
    assert result.valid.column("colors").to_pylist() == [["red"], None, ["green"]]


def test_missing_and_blank_product_id():
    result = validate_catalog(catalog(product_id=["a", None, "  "]), image_dim=DIM)
    assert result.report.rule_counts == {"missing_product_id": 2}
    assert [r["reason"] for r in result.rejected.to_pylist()] == [
        "missing_product_id: product_id is null or blank"
    ] * 2
    assert result.valid.column("product_id").to_pylist() == ["a"]


def test_duplicate_product_id_rejects_every_copy():
    result = validate_catalog(catalog(product_id=["a", "b", "a"]), image_dim=DIM)
    assert result.report.rule_counts == {"duplicate_product_id": 2}
    assert result.valid.column("product_id").to_pylist() == ["b"]
    assert (
        result.rejected.column("reason").to_pylist()
        == ["duplicate_product_id: 2 rows share this product_id"] * 2
    )


def test_wrong_vector_dimension():
    result = validate_catalog(
        catalog(image_embeddings=[[vec(), vec(dim=3)], [], None]), image_dim=DIM
    )
    assert reasons_by_id(result) == {"a": "image_dim_mismatch: an image vector is null or not 4-d"}


def test_null_vector_inside_the_image_list():
    result = validate_catalog(catalog(image_embeddings=[[None], [], None]), image_dim=DIM)
    assert result.report.rule_counts == {"image_dim_mismatch": 1}


def test_more_than_twenty_images():
    result = validate_catalog(
        catalog(image_embeddings=[[vec()] * 21, [vec()] * 20, None]), image_dim=DIM
    )
    assert reasons_by_id(result) == {"a": "too_many_images: 21 image vectors, at most 20"}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, None])
def test_non_finite_values_in_vectors(bad):
    result = validate_catalog(
        catalog(image_embeddings=[[], [vec(), [0.1, bad, 0.2, 0.3]], None]), image_dim=DIM
    )
    assert reasons_by_id(result) == {
        "b": "image_not_finite: an image vector holds NaN, inf or null"
    }


@pytest.mark.parametrize("title", [None, "", "   \t"])
def test_empty_title(title):
    result = validate_catalog(catalog(title=["ok", title, "ok"]), image_dim=DIM)
    assert reasons_by_id(result) == {"b": "missing_title: title is null or blank"}


def test_several_problems_on_one_row_are_all_reported():
    result = validate_catalog(
        catalog(
            product_id=["a", "a", "c"],
            title=["", "t", "t"],
            image_embeddings=[[vec(math.nan)] * 22, [], None],
        ),
        image_dim=DIM,
    )
    assert result.rejected.column("reason")[0].as_py().split("; ") == [
        "missing_title: title is null or blank",
        "too_many_images: 22 image vectors, at most 20",
        "image_not_finite: an image vector holds NaN, inf or null",
        "duplicate_product_id: 2 rows share this product_id",
    ]
    lines = result.report.lines()
    assert lines[0] == "catalog: 3 rows, 1 valid, 2 rejected"
    assert "  column 'title', rule missing_title (title is null or blank): 1 rows" in lines


@pytest.mark.parametrize(
    "column,values,message",
    [
        (
            "product_id",
            [1, 2, 3],
            "catalog column 'product_id' must be string, found int64 "
            "(schema-level: affects all 3 rows)",
        ),
        ("title", [1.5, 2.5, 3.5], "catalog column 'title' must be string, found double"),
        (
            "colors",
            [[1], [2], [3]],
            "catalog column 'colors' must be list<string>, found list<item: int64>",
        ),
        (
            "image_embeddings",
            [["x"], [], []],
            "catalog column 'image_embeddings' must be list<list<float>>, found list<item: string>",
        ),
        (
            "image_embeddings",
            [[1.0], [], []],
            "catalog column 'image_embeddings' must be list<list<float>>, found list<item: double>",
        ),
    ],
)
def test_wrong_column_types_stop_with_a_schema_error(column, values, message):
    with pytest.raises(ContractError) as err:
        validate_catalog(catalog(**{column: values}), image_dim=DIM)
    assert message in str(err.value)


@pytest.mark.parametrize("missing", ["product_id", "title"])
def test_missing_required_column_is_a_schema_error(missing):
    table = catalog().drop_columns([missing])
    with pytest.raises(ContractError, match=f"required column '{missing}' is missing"):
        validate_catalog(table, image_dim=DIM)


def test_extra_columns_are_kept_and_images_are_optional():
    table = pa.table({"product_id": ["x"], "title": ["t"], "country": ["US"], "in_stock": [True]})
    result = validate_catalog(table, image_dim=DIM)
    assert result.valid.column_names == [*CONTRACT_COLUMNS, "country", "in_stock"]
    assert result.valid.column("image_embeddings").to_pylist() == [None]


def test_float64_vectors_and_large_types_are_cast():
    table = pa.table(
        {
            "product_id": pa.array(["x"], pa.large_string()),
            "title": pa.array(["t"], pa.large_string()),
            "image_embeddings": pa.array([[[0.1] * DIM]], pa.large_list(pa.list_(pa.float64()))),
        }
    )
    result = validate_catalog(table, image_dim=DIM)
    assert result.valid.schema.field("image_embeddings").type == pa.list_(pa.list_(pa.float32()))
    assert result.report.valid == 1


def test_empty_catalog():
    table = catalog().slice(0, 0)
    result = validate_catalog(table, image_dim=DIM)
    assert (result.report.rows, result.report.valid, result.report.rejected) == (0, 0, 0)
