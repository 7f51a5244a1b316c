"""Column mapping: TOML checks, the operations, and the shipped Flipkart mapping."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from itemsage_core.catalog_contract import validate_catalog
from itemsage_core.column_mapping import load_mapping, parse_mapping
from itemsage_core.errors import ContractError

FLIPKART_MAPPING = Path(__file__).resolve().parents[1] / "conf" / "mappings" / "flipkart.toml"


def test_rename_concat_split_parse_and_types():
    source = pa.table({
        "sku": ["s1", "s2", "s3"],
        "name": ["Red dress", "Mug", None],
        "maker": ["Acme", None, None],
        "cats": ['["Women >> Dresses >> Maxi"]', "['Home >> Mugs']", None],
        "tags": ["red, blue ,,", "", None],
        "stock": ["TRUE", "false", "maybe"],
        "cost": ["12.5", "n/a", None],
        "keepme": [1, 2, 3],
    })
    mapping = parse_mapping({
        "features": {
            "product_id": {"from": "sku"},
            "title": {"from": ["maker", "name"], "sep": " - "},
            "product_type": {"from": "cats", "parse": "list", "split": ">>", "join": " > "},
            "colors": {"from": "tags", "split": ","},
        },
        "extras": {"in_stock": {"from": "stock", "type": "boolean"},
                   "price": {"from": "cost", "type": "double"}},
    })
    out = mapping.apply(source)
    assert out.column_names == ["product_id", "title", "product_type", "colors", "in_stock",
                                "price", "keepme"]
    assert out.column("title").to_pylist() == ["Acme - Red dress", "Mug", None]
    assert out.column("product_type").to_pylist() == ["Women > Dresses > Maxi", "Home > Mugs",
                                                      None]
    assert out.column("colors").to_pylist() == [["red", "blue"], [], None]
    assert out.column("in_stock").to_pylist() == [True, False, None]
    assert out.column("price").to_pylist() == [12.5, None, None]


def test_passthrough_false_drops_unmapped_columns():
    mapping = parse_mapping({"passthrough": False,
                             "features": {"product_id": {"from": "a"}, "title": {"from": "b"}}})
    out = mapping.apply(pa.table({"a": ["1"], "b": ["t"], "c": [1]}))
    assert out.column_names == ["product_id", "title"]


@pytest.mark.parametrize("doc,message", [
    ({"features": {"colour": {"from": "x"}}}, "'colour' is not a catalog feature"),
    ({"extras": {"title": {"from": "x"}}}, "'title' is a catalog feature"),
    ({"features": {"title": {"from": "x", "upper": True}}}, "unknown key(s) ['upper']"),
    ({"features": {"title": {}}}, "'from' must be a column name"),
    ({"features": {"title": {"from": "x", "split": ","}}}, "add join"),
    ({"features": {"title": {"from": "x", "join": ","}}}, "join needs a list"),
    ({"extras": {"p": {"from": "x", "type": "decimal"}}}, "type must be one of"),
    ({"features": {"title": {"from": "x", "type": "double"}}}, "fixed by the contract"),
    ({"columns": {}}, "unknown top-level key(s) ['columns']"),
    ({}, "maps no columns"),
])
def test_bad_mappings_are_refused_with_the_key_named(doc, message):
    with pytest.raises(ContractError) as err:
        parse_mapping(doc, origin="m.toml")
    assert message in str(err.value)
    assert str(err.value).startswith("m.toml")


def test_mapping_source_column_missing_from_catalog():
    mapping = parse_mapping({"features": {"product_id": {"from": "sku"}}}, origin="m.toml")
    with pytest.raises(ContractError, match=r"source column\(s\) \['sku'\] not in the catalog"):
        mapping.apply(pa.table({"id": ["1"]}))


def test_mapping_source_of_an_unreadable_type():
    mapping = parse_mapping({"features": {"title": {"from": "blob"}}})
    table = pa.table({"blob": pa.array([{"x": 1}])})
    with pytest.raises(ContractError, match="'blob' has type struct<x: int64>, which cannot be"):
        mapping.apply(table)


def test_mapping_file_errors(tmp_path):
    with pytest.raises(ContractError, match="mapping file not found"):
        load_mapping(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[features.title\nfrom = 1")
    with pytest.raises(ContractError, match="not valid TOML"):
        load_mapping(bad)


def test_flipkart_catalog_loads_through_its_mapping(flipkart_path):
    mapping = load_mapping(FLIPKART_MAPPING)
    result = validate_catalog(mapping.apply(pq.read_table(flipkart_path)))
    report = result.report
    assert report.rows == 20_000
    # pid repeats for 2 ids (2 rows each): all 4 copies are quarantined, nothing else.
    assert report.rule_counts == {"duplicate_product_id": 4}
    assert report.valid == 19_996
    assert set(result.rejected.column("product_id").to_pylist()) == {
        "JEAEGE8Q8GXYFTGU", "ACCEJ6TESY7AFT5W"}
    first = result.valid.slice(0, 1).to_pylist()[0]
    assert first["title"] == "Alisha Solid Women's Cycling Shorts"
    assert first["product_type"].startswith("Clothing > Women's Clothing > Lingerie, Sleep")
    assert first["image_embeddings"] is None
    assert first["price"] == 379.0 and first["rating"] is None
