"""The engagement-log contract."""

from __future__ import annotations

import datetime as dt
import math

import pyarrow as pa
import pytest

from itemsage_core.contracts.engagement_contract import ENGAGEMENTS, SURFACES, validate_engagements
from itemsage_core.errors import ContractError

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def log(**overrides):
    rows = {
        "query_embedding": [[0.5] * 4, [0.5] * 4],
        "product_id": ["a", "b"],
        "surface": ["home", "search"],
        "engagement": ["click", "checkout"],
        "ts": [T0, T0],
    }
    rows.update(overrides)
    return pa.table(rows)


def test_valid_log():
    result = validate_engagements(log(), dim=4)
    assert result.report.valid == 2
    assert result.valid.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert SURFACES == ("home", "closeup", "search")
    assert ENGAGEMENTS == ("click", "save", "add_to_cart", "checkout")


@pytest.mark.parametrize(
    "column,values,rule",
    [
        ("product_id", ["a", None], "missing_product_id"),
        ("query_embedding", [[0.5] * 4, [0.5] * 3], "query_dim_mismatch"),
        ("query_embedding", [[0.5] * 4, None], "query_dim_mismatch"),
        ("query_embedding", [[0.5] * 4, [math.nan] * 4], "query_not_finite"),
        ("surface", ["home", "checkout_page"], "unknown_surface"),
        ("engagement", ["click", "purchase"], "unknown_engagement"),
        ("ts", [T0, None], "missing_ts"),
    ],
)
def test_row_rules(column, values, rule):
    result = validate_engagements(log(**{column: values}), dim=4)
    assert result.report.rule_counts == {rule: 1}
    assert result.rejected.column("reason").to_pylist()[0].startswith(f"{rule}: ")


def test_missing_column_and_wrong_type_are_schema_errors():
    with pytest.raises(ContractError, match="required column 'ts' is missing"):
        validate_engagements(log().drop_columns(["ts"]), dim=4)
    with pytest.raises(ContractError, match="column 'ts' must be timestamp, found string"):
        validate_engagements(log(ts=["yesterday", "today"]), dim=4)
