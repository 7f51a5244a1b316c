"""The catalog on Spark: the same verdicts as the in-process validator, at any size."""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from itemsage_core.contracts.catalog_check import validate_local_catalog
from itemsage_core.contracts.catalog_contract import validate_catalog
from itemsage_core.contracts.column_mapping import load_mapping
from itemsage_core.errors import ContractError, ItemSageError
from jobs.catalog_frame import (
    catalog_ids,
    read_catalog,
    repeated_ids,
    validate_on_spark,
    with_reasons,
)

pytestmark = pytest.mark.spark


def bad_catalog() -> pa.Table:
    v = [0.5] * 4
    return pa.table(
        {
            "product_id": ["a", "b", "b", None, "e", "f", "g"],
            "title": ["t", "t", "t", "t", " ", "t", "t"],
            "image_embeddings": [[v], [v], [], [v], None, [v] * 21, [[math.nan] * 4, [1.0]]],
            "country": ["US"] * 7,
        }
    )


def test_spark_and_in_process_validation_agree(spark, tmp_path):
    table = bad_catalog()
    pq.write_table(table.slice(0, 4), tmp_path / "part-0.parquet")
    pq.write_table(table.slice(4), tmp_path / "part-1.parquet")
    repeated = repeated_ids(catalog_ids(spark, str(tmp_path)))
    checked = with_reasons(spark, str(tmp_path), None, repeated, image_dim=4)
    got = {(r["product_id"], r["reason"]) for r in checked.select("product_id", "reason").collect()}
    expected = validate_catalog(table, image_dim=4)
    want = {(r["product_id"], r["reason"]) for r in expected.rejected.to_pylist()}
    want |= {(p, None) for p in expected.valid.column("product_id").to_pylist()}
    assert got == want
    report = validate_on_spark(spark, str(tmp_path), image_dim=4)
    assert report.to_dict() == expected.report.to_dict()
    assert report == validate_local_catalog(str(tmp_path), image_dim=4)
    assert checked.columns[-2:] == ["country", "reason"]


def test_schema_problems_stop_before_reading_data(spark, tmp_path):
    pq.write_table(pa.table({"sku": ["1"], "title": ["t"]}), tmp_path / "c.parquet")
    with pytest.raises(ContractError, match="required column 'product_id' is missing"):
        read_catalog(spark, str(tmp_path))
    with pytest.raises(ItemSageError, match="cannot read catalog Parquet"):
        read_catalog(spark, str(tmp_path / "nowhere"))


def test_flipkart_on_spark_through_its_mapping(spark, flipkart_path, flipkart_mapping):
    mapping = load_mapping(flipkart_mapping)
    report = validate_on_spark(spark, str(flipkart_path), mapping)
    assert (report.rows, report.valid, report.rejected) == (20_000, 19_996, 4)
    assert report.rule_counts == {"duplicate_product_id": 4}
    # "No rating available": counted, kept as null (on_error = "null"), no row rejected.
    assert report.conversions["rating"]["failed"] == 18_151
    assert report == validate_local_catalog(str(flipkart_path), mapping)
