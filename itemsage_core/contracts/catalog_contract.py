"""The catalog contract: columns, types and row rules (docs/data-contracts.md, "Catalog").

`conform_catalog` checks the schema (a problem there raises ContractError) and casts the columns
to their contract types; `catalog_row_problems` gives the rows' problems (which rule each row
breaks, and why); `validate_catalog` does both on a whole in-memory table, including the
duplicate-id rule, whose repeated ids every path counts with `repeated_ids_of`.
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
)
from itemsage_core.contracts.dense_features import (
    DENSE_DIM_MISMATCH,
    DENSE_NOT_FINITE,
    dense_row_problems,
)
from itemsage_core.contracts.validation_report import (
    RowProblems,
    Rule,
    Validated,
    rule_table,
    split_by_problems,
)
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

MISSING_PRODUCT_ID = Rule("missing_product_id", PRODUCT_ID, "product_id is null or blank")
UNDECODABLE_PRODUCT_ID = Rule(
    "undecodable_product_id",
    PRODUCT_ID,
    "product_id holds bytes that are not UTF-8, or U+FFFD (the mark of lost bytes)",
)
DUPLICATE_PRODUCT_ID = Rule(
    "duplicate_product_id",
    PRODUCT_ID,
    "product_id is on more than one row; every copy is rejected",
)
MISSING_TITLE = Rule("missing_title", "title", "title is null or blank")
TOO_MANY_IMAGES = Rule("too_many_images", IMAGE_EMBEDDINGS, f"more than {MAX_IMAGES} image vectors")
IMAGE_DIM_MISMATCH = Rule(
    "image_dim_mismatch",
    IMAGE_EMBEDDINGS,
    "an image vector is null or its length is not the image dimension",
)
IMAGE_NOT_FINITE = Rule(
    "image_not_finite", IMAGE_EMBEDDINGS, "an image vector holds NaN, +-inf or null"
)
UNPARSABLE_EXTRA = Rule(
    "unparsable_extra",
    "extras",
    "an extra column's value cannot be converted to its type, and its mapping rule says "
    "on_error = reject (the default)",
)
RULES: dict[str, Rule] = rule_table(
    MISSING_PRODUCT_ID,
    UNDECODABLE_PRODUCT_ID,
    DUPLICATE_PRODUCT_ID,
    MISSING_TITLE,
    TOO_MANY_IMAGES,
    IMAGE_DIM_MISMATCH,
    IMAGE_NOT_FINITE,
    DENSE_DIM_MISMATCH,
    DENSE_NOT_FINITE,
    UNPARSABLE_EXTRA,
)


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


def repeated_ids_of(ids: pa.Array | pa.ChunkedArray) -> pa.Table:
    """product_id and count of the ids on more than one row (null ids are missing ids, not
    duplicates): what `copies_in` takes. Every duplicate-id check (in memory, batch by batch, on
    Spark) counts the ids with this function."""
    counted = pc.value_counts(ids.drop_null())
    repeated = pa.table({PRODUCT_ID: counted.field("values"), "count": counted.field("counts")})
    return repeated.filter(pc.greater(repeated.column("count"), 1))


def copies_in(table: pa.Table, repeated: pa.Table) -> pa.Array:
    """Per row: how many rows share its product_id (`repeated`: repeated_ids_of the whole
    catalog's ids), null when it is unique."""
    where = pc.index_in(table.column(PRODUCT_ID), value_set=repeated.column(PRODUCT_ID))
    return pc.take(repeated.column("count"), where)


def catalog_row_problems(
    table: pa.Table,
    image_dim: int = DEFAULT_IMAGE_DIM,
    copies: pa.Array | None = None,
    rejects: pa.Array | None = None,
) -> RowProblems:
    """The row problems of a conformed catalog (RowProblems.render gives each row's reasons).

    Uniqueness is a dataset-level rule: `copies` gives, per row, how many rows of the whole
    catalog share its product_id (copies_in, from repeated_ids_of the whole dataset's ids;
    null = unique). `rejects`: per row, the column mapping's failed conversions that reject it
    (MappedBatch.rejects).
    """
    counts, wrong_dim, not_finite = nested_vector_problems(
        as_array(table.column(IMAGE_EMBEDDINGS)), image_dim
    )
    ids = as_array(table.column(PRODUCT_ID))
    problems = RowProblems(table.num_rows)
    problems.add(MISSING_PRODUCT_ID, blank_strings(ids), "product_id is null or blank")
    problems.add(
        UNDECODABLE_PRODUCT_ID,
        holds_replacement(ids),
        "product_id holds bytes that are not UTF-8 (shown as U+FFFD)",
    )
    problems.add(
        MISSING_TITLE, blank_strings(as_array(table.column("title"))), "title is null or blank"
    )
    problems.add(
        TOO_MANY_IMAGES,
        counts > MAX_IMAGES,
        pc.binary_join_element_wise(
            pa.array(counts).cast(pa.string()), f" image vectors, at most {MAX_IMAGES}", ""
        ),
    )
    problems.add(IMAGE_DIM_MISMATCH, wrong_dim, f"an image vector is null or not {image_dim}-d")
    problems.add(IMAGE_NOT_FINITE, not_finite, "an image vector holds NaN, inf or null")
    dense_row_problems(table, problems)
    if copies is not None:
        copies = pc.fill_null(copies, 1)
        problems.add(
            DUPLICATE_PRODUCT_ID,
            pc.greater(copies, 1),
            pc.binary_join_element_wise(
                copies.cast(pa.string()), " rows share this product_id", ""
            ),
        )
    if rejects is not None:
        problems.add(UNPARSABLE_EXTRA, pc.is_valid(rejects), rejects)
    return problems


def validate_catalog(
    data: pa.Table | pa.RecordBatch, image_dim: int = DEFAULT_IMAGE_DIM
) -> Validated:
    """Validate a whole in-memory catalog against the contract (schema, rows, unique ids)."""
    table = conform_catalog(data)
    copies = copies_in(table, repeated_ids_of(table.column(PRODUCT_ID)))
    return split_by_problems(
        "catalog", RULES, table, catalog_row_problems(table, image_dim, copies)
    )
