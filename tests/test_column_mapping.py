"""Column mapping: TOML checks, the operations, and the shipped Flipkart mapping."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from itemsage_core.contracts.catalog_check import check_batch
from itemsage_core.contracts.catalog_contract import repeated_ids_of, validate_catalog
from itemsage_core.contracts.column_mapping import add_failures, load_mapping, parse_mapping
from itemsage_core.contracts.validation_report import conversion_lines
from itemsage_core.errors import ContractError


def test_rename_concat_split_parse_and_types():
    source = pa.table(
        {
            "sku": ["s1", "s2", "s3"],
            "name": ["Red dress", "Mug", None],
            "maker": ["Acme", None, None],
            "cats": ['["Women >> Dresses >> Maxi"]', "['Home >> Mugs']", None],
            "tags": ["red, blue ,,", "", None],
            "stock": ["TRUE", "false", "maybe"],
            "cost": ["12.5", "n/a", None],
            "keepme": [1, 2, 3],
        }
    )
    mapping = parse_mapping(
        {
            "features": {
                "product_id": {"from": "sku"},
                "title": {"from": ["maker", "name"], "sep": " - "},
                "product_type": {"from": "cats", "parse": "list", "split": ">>", "join": " > "},
                "colors": {"from": "tags", "split": ","},
            },
            "extras": {
                "in_stock": {"from": "stock", "type": "boolean"},
                "price": {"from": "cost", "type": "double"},
            },
        }
    )
    out = mapping.apply(source)
    assert out.column_names == [
        "product_id",
        "title",
        "product_type",
        "colors",
        "in_stock",
        "price",
        "keepme",
    ]
    assert out.column("title").to_pylist() == ["Acme - Red dress", "Mug", None]
    assert out.column("product_type").to_pylist() == ["Women > Dresses > Maxi", "Home > Mugs", None]
    assert out.column("colors").to_pylist() == [["red", "blue"], [], None]
    assert out.column("in_stock").to_pylist() == [True, False, None]
    assert out.column("price").to_pylist() == [12.5, None, None]


def test_passthrough_false_drops_unmapped_columns():
    mapping = parse_mapping(
        {"passthrough": False, "features": {"product_id": {"from": "a"}, "title": {"from": "b"}}}
    )
    out = mapping.apply(pa.table({"a": ["1"], "b": ["t"], "c": [1]}))
    assert out.column_names == ["product_id", "title"]


@pytest.mark.parametrize(
    "doc,message",
    [
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
        ({"extras": {"p": {"from": "x", "parse": "digits"}}}, "parse must be one of"),
        (
            {"extras": {"p": {"from": "x", "parse": "number", "type": "boolean"}}},
            'parse = "number" makes double or bigint, not boolean',
        ),
        (
            {"extras": {"p": {"from": "x", "parse": "boolean", "type": "double"}}},
            'parse = "boolean" makes boolean, not double',
        ),
        ({"features": {"title": {"from": "x", "parse": "number"}}}, "is for extras"),
        (
            {"extras": {"p": {"from": "x", "type": "double", "range": "low"}}},
            'range needs parse = "number"',
        ),
        (
            {"extras": {"p": {"from": "x", "parse": "number", "range": "mid"}}},
            "range must be one of",
        ),
        ({"extras": {"p": {"from": "x", "on_error": "null"}}}, "on_error needs a conversion"),
        (
            {"extras": {"p": {"from": "x", "type": "double", "on_error": "skip"}}},
            "on_error must be one of",
        ),
    ],
)
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


def test_flipkart_catalog_loads_through_its_mapping(flipkart_path, flipkart_mapping):
    mapping = load_mapping(flipkart_mapping)
    result = validate_catalog(mapping.apply(pq.read_table(flipkart_path)))
    report = result.report
    assert report.rows == 20_000
    # pid repeats for 2 ids (2 rows each): all 4 copies are quarantined, nothing else.
    assert report.rule_counts == {"duplicate_product_id": 4}
    assert report.valid == 19_996
    assert set(result.rejected.column("product_id").to_pylist()) == {
        "JEAEGE8Q8GXYFTGU",
        "ACCEJ6TESY7AFT5W",
    }
    first = result.valid.slice(0, 1).to_pylist()[0]
    assert first["title"] == "Alisha Solid Women's Cycling Shorts"
    assert first["product_type"].startswith("Clothing > Women's Clothing > Lingerie, Sleep")
    assert first["image_embeddings"] is None
    assert first["price"] == 379.0 and first["rating"] is None


MESSY = [
    "£3.42",
    "£6.99 - £10.49",
    "1,040",
    "$1,234.50",
    " 12 ",
    "abc",
    "",
    None,
    "€5–€7",
    "5 to 9",
    "Rs. 1,299",
    "1,04",
    "1,234,567.5",
]


def prices(**rule) -> tuple[list, dict]:
    mapping = parse_mapping({"extras": {"price": {"from": "p", **rule}}})
    mapped = mapping.map_batch(pa.table({"p": pa.array(MESSY, pa.string())}))
    return mapped.table.column("price").to_pylist(), mapped.failures["price"]


def test_a_strict_double_counts_the_values_it_used_to_turn_into_silent_nulls():
    """The observed failure: type = "double" on '£3.42' gave null and no trace."""
    got, failures = prices(type="double", on_error="null")
    assert got == [None, None, None, None, 12.0, None, None, None, None, None, None, None, None]
    assert failures["values"] == 11 and failures["failed"] == 10  # blank and null are no value
    assert failures["examples"] == ["$1,234.50", "1,04", "1,040"]  # the first 3, sorted


@pytest.mark.parametrize(
    "range_,two_ends",
    [("low", [6.99, 5.0, 5.0]), ("high", [10.49, 7.0, 9.0]), ("reject", [None, None, None])],
)
def test_parse_number_reads_messy_prices(range_, two_ends):
    got, failures = prices(parse="number", range=range_, on_error="null")
    assert got == [
        3.42,
        two_ends[0],
        1040.0,
        1234.5,
        12.0,
        None,
        None,
        None,
        *two_ends[1:],
        1299.0,
        None,
        1234567.5,
    ]
    assert failures["examples"] == (
        ["1,04", "abc"] if range_ != "reject" else ["1,04", "5 to 9", "abc"]
    )  # and the two others
    assert failures["failed"] == (2 if range_ != "reject" else 5)


def test_parse_number_as_bigint_fails_fractions_instead_of_truncating_them():
    got, failures = prices(parse="number", type="bigint", on_error="null")
    assert got == [None, None, 1040, None, 12, None, None, None, 5, 5, 1299, None, None]
    assert failures["failed"] == 6  # £3.42, £6.99, $1,234.50, abc, 1,04, 1,234,567.5
    assert failures["examples"] == ["$1,234.50", "1,04", "1,234,567.5"]


def test_booleans():
    mapping = parse_mapping(
        {"extras": {"a": {"from": "x", "parse": "boolean"}, "b": {"from": "x", "type": "boolean"}}}
    )
    mapped = mapping.map_batch(
        pa.table({"x": ["TRUE", "yes", "1", "n", " F ", "No", "maybe", "", None]})
    )
    expected = [True, True, True, False, False, False, None, None, None]
    assert mapped.table.column("a").to_pylist() == expected == mapped.table.column("b").to_pylist()
    assert mapped.failures["a"] == {
        "values": 7,
        "failed": 1,
        "examples": ["maybe"],
        "on_error": "reject",
    }


def test_on_error_reject_rejects_the_row_with_a_reason_naming_column_and_value():
    mapping = parse_mapping(
        {
            "features": {"product_id": {"from": "id"}, "title": {"from": "name"}},
            "extras": {
                "price": {"from": "p", "type": "double"},
                "stock": {"from": "s", "parse": "boolean"},
                "rating": {"from": "r", "type": "double", "on_error": "null"},
            },
        }
    )
    raw = pa.table(
        {
            "id": ["a", "b", "c", "d"],
            "name": ["t"] * 4,
            "p": ["£3.42", "2.5", "x;y", None],
            "s": ["maybe", "yes", "no", ""],
            "r": ["n/a", "4", "5", "?"],
        }
    )
    failures: dict = {}
    table, reasons = check_batch(
        raw, mapping, 256, repeated_ids_of(pa.array([], pa.string())), failures
    )
    assert reasons.to_pylist() == [
        "unparsable_extra: price '£3.42' is not a double, stock 'maybe' is not a boolean",
        None,
        "unparsable_extra: price 'x,y' is not a double",
        None,
    ]
    assert table.column("price").to_pylist() == [None, 2.5, None, None]
    assert table.column("rating").to_pylist() == [None, 4.0, 5.0, None]
    assert {c: (f["failed"], f["on_error"]) for c, f in failures.items()} == {
        "price": (2, "reject"),
        "stock": (1, "reject"),
        "rating": (2, "null"),
    }
    assert conversion_lines(failures) == [
        "extra 'price': 2 of 3 values could not be converted, rows rejected "
        '(on_error = "reject"), e.g. "x;y", "£3.42"',
        "extra 'rating': 2 of 4 values could not be converted, kept as null "
        '(on_error = "null"), e.g. "?", "n/a"',
        "extra 'stock': 1 of 3 values could not be converted, rows rejected "
        '(on_error = "reject"), e.g. "maybe"',
    ]


def test_failure_counts_add_up_in_any_order():
    mapping = parse_mapping({"extras": {"price": {"from": "p", "type": "double"}}})
    parts = [
        mapping.map_batch(pa.table({"p": values})).failures
        for values in (["a", "1", "d"], ["c", None, "b"], ["e"])
    ]
    forward, backward = {}, {}
    for part in parts:
        add_failures(forward, part)
    for part in reversed(parts):
        add_failures(backward, part)
    assert (
        forward
        == backward
        == {"price": {"values": 6, "failed": 5, "examples": ["a", "b", "c"], "on_error": "reject"}}
    )
