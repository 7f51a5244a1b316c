"""A local catalog validated in-process (itemsage_core/contracts/catalog_check.py), batch by
batch."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from itemsage_core.contracts.catalog_check import validate_local_catalog
from itemsage_core.contracts.catalog_contract import repeated_ids_of
from itemsage_core.contracts.column_mapping import parse_mapping
from itemsage_core.errors import ContractError

FEATURES = {"product_id": {"from": "sku"}, "title": {"from": "name"}}
MESSY_MAPPING = parse_mapping(
    {
        "features": FEATURES,
        "extras": {
            "price": {"from": "price_text", "parse": "number"},
            "reviews": {"from": "review_text", "type": "bigint", "on_error": "null"},
        },
    }
)


def messy_catalog() -> pa.Table:
    """Prices and review counts as a real export writes them; sku 'b' on two rows."""
    return pa.table(
        {
            "sku": ["a", "b", "b", "d", "e", "f", "g", "h"],
            "name": ["t", "t", "t", " ", "t", "t", "t", "t"],
            "price_text": [
                "£3.42",
                "£6.99 - £10.49",
                "1,040",
                "abc",
                None,
                " ",
                "POA",
                "$1,234.50",
            ],
            "review_text": ["1,040", "12", "", None, "7", "n/a", "3", "1,040"],
        }
    )


def write_in_two_files(table: pa.Table, folder) -> None:
    folder.mkdir()
    pq.write_table(table.slice(0, 5), folder / "part-0.parquet", row_group_size=2)
    pq.write_table(table.slice(5), folder / "part-1.parquet")


def test_local_validation_counts_rules_and_failed_conversions(tmp_path):
    write_in_two_files(messy_catalog(), tmp_path / "c")
    report = validate_local_catalog(str(tmp_path / "c"), MESSY_MAPPING)
    assert (report.rows, report.valid, report.rejected) == (8, 4, 4)
    assert report.rule_counts == {
        "duplicate_product_id": 2,
        "missing_title": 1,
        "unparsable_extra": 2,
    }
    assert report.conversions == {
        "price": {"values": 6, "failed": 2, "examples": ["POA", "abc"], "on_error": "reject"},
        "reviews": {"values": 6, "failed": 3, "examples": ["1,040", "n/a"], "on_error": "null"},
    }
    assert any(
        "extra 'reviews': 3 of 6 values could not be converted, kept as null" in line
        for line in report.lines()
    )


def test_a_schema_problem_names_the_file_before_any_row_is_read(tmp_path):
    pq.write_table(pa.table({"product_id": ["1"], "title": ["t"]}), tmp_path / "ok.parquet")
    pq.write_table(pa.table({"product_id": [1], "title": ["t"]}), tmp_path / "bad.parquet")
    with pytest.raises(ContractError, match=r"bad\.parquet: catalog column 'product_id' must be"):
        validate_local_catalog(str(tmp_path))


@pytest.mark.spark
def test_spark_gives_the_same_report_and_reasons(spark, tmp_path):
    from jobs.catalog_frame import validate_on_spark, with_reasons

    write_in_two_files(messy_catalog(), tmp_path / "c")
    path = str(tmp_path / "c")
    assert validate_on_spark(spark, path, MESSY_MAPPING) == validate_local_catalog(
        path, MESSY_MAPPING
    )
    checked = with_reasons(spark, path, MESSY_MAPPING, repeated_ids_of(pa.array(["b", "b"])))
    reasons = dict(checked.select("product_id", "reason").collect())
    assert reasons["g"] == "unparsable_extra: price 'POA' is not a double"
