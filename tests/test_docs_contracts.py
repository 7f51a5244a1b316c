"""docs/data-contracts.md and the validators agree: columns, types, required flags and rules."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from itemsage_core.contracts import catalog_contract, engagement_contract
from itemsage_core.contracts.column_mapping import RULE_KEYS

DOC = (Path(__file__).resolve().parents[1] / "docs" / "data-contracts.md").read_text()


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", DOC, re.S | re.M)
    assert match, f"no section {title!r}"
    return match.group(1)


def tables(text: str) -> list[list[list[str]]]:
    """Every markdown table in `text`, as rows of cells (header and separator dropped)."""
    found, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append([c.strip().strip("`") for c in line.strip("|").split("|")])
        elif current:
            found.append(current[2:])
            current = []
    return found


@pytest.mark.parametrize(
    "title,columns,required,rules",
    [
        (
            "Catalog",
            catalog_contract.CONTRACT_COLUMNS,
            set(catalog_contract.REQUIRED_COLUMNS),
            catalog_contract.RULES,
        ),
        (
            "Engagement log",
            engagement_contract.COLUMNS,
            set(engagement_contract.COLUMNS),
            engagement_contract.RULES,
        ),
    ],
)
def test_columns_and_rules_match_the_code(title, columns, required, rules):
    column_table, rule_table = tables(section(title))
    assert {r[0]: r[1] for r in column_table} == dict(columns)
    assert [r[0] for r in column_table] == list(columns)  # same order as the code
    assert {r[0] for r in column_table if r[2] == "yes"} == required
    assert {r[0]: (r[1], r[2]) for r in rule_table} == {
        name: (rule.column, rule.description) for name, rule in rules.items()
    }


def test_mapping_keys_match_the_code():
    (keys,) = tables(section("Column mapping"))
    assert {r[0] for r in keys} == RULE_KEYS
