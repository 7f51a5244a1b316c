"""The engagement-log contract (docs/data-contracts.md, "Engagement log").

One row is one (query embedding, engaged product) training example from a surface and an
engagement type. Schema problems raise ContractError; row problems give a reason per row.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from itemsage_core.contracts import column_types as ct
from itemsage_core.contracts.arrow_checks import (
    as_array,
    blank_strings,
    reasons_column,
    vector_problems,
)
from itemsage_core.contracts.validation_report import Rule, Validated, split_by_reasons
from itemsage_core.errors import ContractError

SURFACES = ("home", "closeup", "search")
ENGAGEMENTS = ("click", "save", "add_to_cart", "checkout")
DEFAULT_QUERY_DIM = 256

COLUMNS: dict[str, str] = {
    "query_embedding": ct.VECTOR,
    "product_id": ct.STRING,
    "surface": ct.STRING,
    "engagement": ct.STRING,
    "ts": ct.TIMESTAMP,
}

RULES: dict[str, Rule] = {
    r.name: r
    for r in [
        Rule("missing_product_id", "product_id", "product_id is null or blank"),
        Rule(
            "query_dim_mismatch",
            "query_embedding",
            "query_embedding is null or its length is not the embedding dimension",
        ),
        Rule("query_not_finite", "query_embedding", "query_embedding holds NaN, +-inf or null"),
        Rule("unknown_surface", "surface", f"surface is not one of {', '.join(SURFACES)}"),
        Rule(
            "unknown_engagement", "engagement", f"engagement is not one of {', '.join(ENGAGEMENTS)}"
        ),
        Rule("missing_ts", "ts", "ts is null"),
    ]
}


def engagement_schema(extras: pa.Schema | None = None) -> pa.Schema:
    """Arrow schema of a conformed engagement log: contract columns, then any extra columns."""
    return ct.contract_schema(COLUMNS, extras)


def conform_engagements(data: pa.Table | pa.RecordBatch) -> pa.Table:
    """Check the schema (every contract column is required) and cast to contract types."""
    table = pa.table(data)  # a Table, or a RecordBatch from mapInArrow
    for name, kind in COLUMNS.items():
        if name not in table.column_names:
            raise ContractError(
                f"engagements: required column '{name}' is missing (found "
                f"columns: {', '.join(table.column_names) or 'none'})"
            )
        ct.check_type("engagements", name, table.schema.field(name).type, kind, table.num_rows)
    return ct.conform_columns(table, COLUMNS)


def _not_in(column: pa.Array, allowed: tuple[str, ...]) -> pa.Array:
    return pc.invert(pc.fill_null(pc.is_in(column, value_set=pa.array(allowed)), False))


def engagement_row_problems(table: pa.Table, dim: int = DEFAULT_QUERY_DIM) -> pa.Array:
    """Per row of a conformed engagement log: the reasons it is invalid, or null."""
    wrong_dim, not_finite = vector_problems(as_array(table.column("query_embedding")), dim)
    return reasons_column(
        [
            (
                "missing_product_id: product_id is null or blank",
                blank_strings(as_array(table.column("product_id"))),
            ),
            (f"query_dim_mismatch: query_embedding is null or not {dim}-d", wrong_dim),
            ("query_not_finite: query_embedding holds NaN, inf or null", not_finite),
            (
                "unknown_surface: surface must be one of " + ", ".join(SURFACES),
                _not_in(as_array(table.column("surface")), SURFACES),
            ),
            (
                "unknown_engagement: engagement must be one of " + ", ".join(ENGAGEMENTS),
                _not_in(as_array(table.column("engagement")), ENGAGEMENTS),
            ),
            ("missing_ts: ts is null", as_array(table.column("ts")).is_null()),
        ]
    )


def validate_engagements(
    data: pa.Table | pa.RecordBatch, dim: int = DEFAULT_QUERY_DIM
) -> Validated:
    """Validate a whole in-memory engagement log against the contract."""
    table = conform_engagements(data)
    return split_by_reasons("engagements", RULES, table, engagement_row_problems(table, dim))
