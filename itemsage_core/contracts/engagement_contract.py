"""The engagement-log contract (docs/data-contracts.md, "Engagement log").

One row is one (query embedding, engaged product) training example from a surface and an
engagement type. Schema problems raise ContractError; row problems (RowProblems, per rule)
give a reason per row.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from itemsage_core.contracts import column_types as ct
from itemsage_core.contracts.arrow_checks import (
    as_array,
    blank_strings,
    vector_problems,
)
from itemsage_core.contracts.validation_report import (
    RowProblems,
    Rule,
    Validated,
    rule_table,
    split_by_problems,
)
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

MISSING_PRODUCT_ID = Rule("missing_product_id", "product_id", "product_id is null or blank")
QUERY_DIM_MISMATCH = Rule(
    "query_dim_mismatch",
    "query_embedding",
    "query_embedding is null or its length is not the embedding dimension",
)
QUERY_NOT_FINITE = Rule(
    "query_not_finite", "query_embedding", "query_embedding holds NaN, +-inf or null"
)
UNKNOWN_SURFACE = Rule("unknown_surface", "surface", f"surface is not one of {', '.join(SURFACES)}")
UNKNOWN_ENGAGEMENT = Rule(
    "unknown_engagement", "engagement", f"engagement is not one of {', '.join(ENGAGEMENTS)}"
)
MISSING_TS = Rule("missing_ts", "ts", "ts is null")
RULES: dict[str, Rule] = rule_table(
    MISSING_PRODUCT_ID,
    QUERY_DIM_MISMATCH,
    QUERY_NOT_FINITE,
    UNKNOWN_SURFACE,
    UNKNOWN_ENGAGEMENT,
    MISSING_TS,
)


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


def engagement_row_problems(table: pa.Table, dim: int = DEFAULT_QUERY_DIM) -> RowProblems:
    """The row problems of a conformed engagement log (RowProblems.render gives the reasons)."""
    wrong_dim, not_finite = vector_problems(as_array(table.column("query_embedding")), dim)
    problems = RowProblems(table.num_rows)
    problems.add(
        MISSING_PRODUCT_ID,
        blank_strings(as_array(table.column("product_id"))),
        "product_id is null or blank",
    )
    problems.add(QUERY_DIM_MISMATCH, wrong_dim, f"query_embedding is null or not {dim}-d")
    problems.add(QUERY_NOT_FINITE, not_finite, "query_embedding holds NaN, inf or null")
    problems.add(
        UNKNOWN_SURFACE,
        _not_in(as_array(table.column("surface")), SURFACES),
        "surface must be one of " + ", ".join(SURFACES),
    )
    problems.add(
        UNKNOWN_ENGAGEMENT,
        _not_in(as_array(table.column("engagement")), ENGAGEMENTS),
        "engagement must be one of " + ", ".join(ENGAGEMENTS),
    )
    problems.add(MISSING_TS, as_array(table.column("ts")).is_null(), "ts is null")
    return problems


def validate_engagements(
    data: pa.Table | pa.RecordBatch, dim: int = DEFAULT_QUERY_DIM
) -> Validated:
    """Validate a whole in-memory engagement log against the contract."""
    table = conform_engagements(data)
    return split_by_problems("engagements", RULES, table, engagement_row_problems(table, dim))
