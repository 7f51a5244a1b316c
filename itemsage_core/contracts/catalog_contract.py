"""The catalog contract: columns, types and row rules (docs/data-contracts.md, "Catalog").

`conform_catalog` checks the schema (a problem there raises ContractError) and casts the columns
to their contract types; `catalog_row_problems` gives each row's reasons for rejection;
`validate_catalog` does both on a whole in-memory table, including the duplicate-id rule.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from itemsage_core.contracts import column_types as ct
from itemsage_core.contracts.arrow_checks import (
    as_array,
    blank_strings,
    holds_replacement,
    nested_vector_problems,
    reasons_column,
)
from itemsage_core.contracts.validation_report import Rule, Validated, split_by_reasons
from itemsage_core.errors import ContractError

PRODUCT_ID = "product_id"
IMAGE_EMBEDDINGS = "image_embeddings"
MAX_IMAGES = 20
DEFAULT_IMAGE_DIM = 256

# The paper's 12 text features, in a fixed order (the encoder's feature-type ids follow it).
TEXT_FEATURES: dict[str, str] = {
    "title": ct.STRING,
    "description": ct.STRING,
    "brand": ct.STRING,
    "colors": ct.STRING_LIST,
    "materials": ct.STRING_LIST,
    "patterns": ct.STRING_LIST,
    "size": ct.STRING,
    "size_type": ct.STRING,
    "product_type": ct.STRING,
    "google_product_category": ct.STRING,
    "merchant_domain": ct.STRING,
    "links": ct.STRING_LIST,
}
CONTRACT_COLUMNS: dict[str, str] = {
    PRODUCT_ID: ct.STRING,
    **TEXT_FEATURES,
    IMAGE_EMBEDDINGS: ct.VECTOR_LIST,
}
REQUIRED_COLUMNS = (PRODUCT_ID, "title")

RULES: dict[str, Rule] = {
    r.name: r
    for r in [
        Rule("missing_product_id", PRODUCT_ID, "product_id is null or blank"),
        Rule(
            "undecodable_product_id",
            PRODUCT_ID,
            "product_id holds bytes that are not UTF-8, or U+FFFD (the mark of lost bytes)",
        ),
        Rule(
            "duplicate_product_id",
            PRODUCT_ID,
            "product_id is on more than one row; every copy is rejected",
        ),
        Rule("missing_title", "title", "title is null or blank"),
        Rule("too_many_images", IMAGE_EMBEDDINGS, f"more than {MAX_IMAGES} image vectors"),
        Rule(
            "image_dim_mismatch",
            IMAGE_EMBEDDINGS,
            "an image vector is null or its length is not the image dimension",
        ),
        Rule("image_not_finite", IMAGE_EMBEDDINGS, "an image vector holds NaN, +-inf or null"),
        Rule(
            "unparsable_extra",
            "extras",
            "an extra column's value cannot be converted to its type, and its mapping rule says "
            "on_error = reject (the default)",
        ),
    ]
}


def require_text_features(features) -> None:
    """ContractError unless every name is one of the contract's text features."""
    unknown = sorted(set(features) - set(TEXT_FEATURES))
    if unknown:
        raise ContractError(
            f"--exclude-feature {', '.join(unknown)}: not a text feature; one of "
            f"{', '.join(TEXT_FEATURES)}"
        )


def catalog_schema(extras: pa.Schema | None = None) -> pa.Schema:
    """Arrow schema of a conformed catalog: the contract columns, then any extra columns."""
    return ct.contract_schema(CONTRACT_COLUMNS, extras)


def check_catalog_schema(schema: pa.Schema, rows: int | None = None) -> None:
    """Raise ContractError when the schema cannot be conformed (missing or mistyped columns)."""
    names = schema.names
    for name in REQUIRED_COLUMNS:
        if name not in names:
            raise ContractError(
                f"catalog: required column '{name}' is missing (found columns: "
                f"{', '.join(names) or 'none'}); map your columns with --mapping"
            )
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ContractError(f"catalog: column names appear more than once: {duplicated}")
    for name, kind in CONTRACT_COLUMNS.items():
        if name in names:
            ct.check_type("catalog", name, schema.field(name).type, kind, rows)


def conform_catalog(data: pa.Table | pa.RecordBatch) -> pa.Table:
    """Contract columns in contract order and types (absent optional ones as nulls), then extras."""
    table = pa.table(data)  # a Table, or a RecordBatch from mapInArrow
    check_catalog_schema(table.schema, table.num_rows)
    return ct.conform_columns(table, CONTRACT_COLUMNS)


def catalog_row_problems(
    table: pa.Table,
    image_dim: int = DEFAULT_IMAGE_DIM,
    copies: pa.Array | None = None,
    rejects: pa.Array | None = None,
) -> pa.Array:
    """Per row of a conformed catalog: the reasons it is invalid, or null.

    Uniqueness is a dataset-level rule: `copies` gives, per row, how many rows of the whole
    catalog share its product_id (computed by the caller over the whole dataset). `rejects`:
    per row, the column mapping's failed conversions that reject it (MappedBatch.rejects).
    """
    counts, wrong_dim, not_finite = nested_vector_problems(
        as_array(table.column(IMAGE_EMBEDDINGS)), image_dim
    )
    too_many = pc.binary_join_element_wise(
        "too_many_images: ",
        pa.array(counts).cast(pa.string()),
        f" image vectors, at most {MAX_IMAGES}",
        "",
    )
    rules = [
        (
            "missing_product_id: product_id is null or blank",
            blank_strings(as_array(table.column(PRODUCT_ID))),
        ),
        (
            "undecodable_product_id: product_id holds bytes that are not UTF-8 (shown as U+FFFD)",
            holds_replacement(as_array(table.column(PRODUCT_ID))),
        ),
        ("missing_title: title is null or blank", blank_strings(as_array(table.column("title")))),
        (too_many, counts > MAX_IMAGES),
        (f"image_dim_mismatch: an image vector is null or not {image_dim}-d", wrong_dim),
        ("image_not_finite: an image vector holds NaN, inf or null", not_finite),
    ]
    if copies is not None:
        copies = pc.fill_null(copies, 1)
        rules.append(
            (
                pc.binary_join_element_wise(
                    "duplicate_product_id: ",
                    copies.cast(pa.string()),
                    " rows share this product_id",
                    "",
                ),
                pc.greater(copies, 1),
            )
        )
    if rejects is not None:
        rules.append(
            (pc.binary_join_element_wise("unparsable_extra: ", rejects, ""), pc.is_valid(rejects))
        )
    return reasons_column(rules)


def id_copies(product_ids: pa.Array) -> pa.Array:
    """Per row, how many rows carry the same product_id (null for a null id)."""
    counted = pc.value_counts(product_ids)
    where = pc.index_in(product_ids, counted.field("values"), skip_nulls=True)
    return pc.take(counted.field("counts"), where)


def validate_catalog(
    data: pa.Table | pa.RecordBatch, image_dim: int = DEFAULT_IMAGE_DIM
) -> Validated:
    """Validate a whole in-memory catalog against the contract (schema, rows, unique ids)."""
    table = conform_catalog(data)
    copies = id_copies(as_array(table.column(PRODUCT_ID)))
    reasons = catalog_row_problems(table, image_dim, copies)
    return split_by_reasons("catalog", RULES, table, reasons)
