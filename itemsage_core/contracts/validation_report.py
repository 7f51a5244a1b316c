"""Row-level validation results: which rows failed which rule, and counts per rule.

A row's `reason` is a '; '-joined list of `rule: detail` texts (see docs/data-contracts.md), so the
rule names can be counted back from the reasons alone, in Arrow here or in Spark SQL in the jobs.
"""

from __future__ import annotations

import dataclasses
import json

import pyarrow as pa
import pyarrow.compute as pc


@dataclasses.dataclass(frozen=True)
class Rule:
    """A row-level rule of a data contract."""

    name: str
    column: str
    description: str


@dataclasses.dataclass
class ValidationReport:
    """Counts of one validated dataset: rows in, valid, rejected, offending rows per rule, and
    the column mapping's failed conversions per extra column (column_mapping.add_failures)."""

    contract: str
    rows: int
    valid: int
    rejected: int
    rule_counts: dict[str, int]
    rules: dict[str, Rule]
    conversions: dict[str, dict] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.valid + self.rejected != self.rows:
            raise AssertionError(
                f"{self.contract}: {self.valid} valid + {self.rejected} rejected "
                f"!= {self.rows} rows"
            )

    def lines(self) -> list[str]:
        """Human-readable summary: one line for the totals, one per violated rule, one per extra
        column with failed conversions."""
        out = [f"{self.contract}: {self.rows} rows, {self.valid} valid, {self.rejected} rejected"]
        for name, count in sorted(self.rule_counts.items()):
            rule = self.rules[name]
            out.append(f"  column '{rule.column}', rule {name} ({rule.description}): {count} rows")
        return out + [f"  {line}" for line in conversion_lines(self.conversions)]

    def to_dict(self) -> dict:
        return {
            "contract": self.contract,
            "rows": self.rows,
            "valid": self.valid,
            "rejected": self.rejected,
            "violations": [
                {"column": self.rules[n].column, "rule": n, "rows": c}
                for n, c in sorted(self.rule_counts.items())
            ],
            "conversions": self.conversions,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def conversion_lines(conversions: dict[str, dict]) -> list[str]:
    """One line per extra column with failed conversions: how many, what became of them, the
    examples."""
    outcome = {"reject": "rows rejected", "null": "kept as null"}
    return [
        f"extra '{column}': {c['failed']} of {c['values']} values could not be converted, "
        f'{outcome[c["on_error"]]} (on_error = "{c["on_error"]}"), e.g. '
        + ", ".join(json.dumps(e, ensure_ascii=False) for e in c["examples"])
        for column, c in sorted(conversions.items())
        if c["failed"]
    ]


def rule_counts(reasons: pa.Array | pa.ChunkedArray) -> dict[str, int]:
    """Number of rows violating each rule, read back from a reasons column (null = valid row)."""
    texts = pc.drop_null(reasons)
    if len(texts) == 0:
        return {}
    names = pc.list_flatten(pc.split_pattern(texts, "; "))
    names = pc.list_element(pc.split_pattern(names, ":", max_splits=1), 0)
    counted = pc.value_counts(names).to_pylist()
    return {entry["values"]: entry["counts"] for entry in counted}


def build_report(contract: str, rules: dict[str, Rule], reasons: pa.Array) -> ValidationReport:
    """Report for one dataset from its per-row reasons column (null = valid row)."""
    valid = reasons.null_count
    return ValidationReport(
        contract=contract,
        rows=len(reasons),
        valid=valid,
        rejected=len(reasons) - valid,
        rule_counts=rule_counts(reasons),
        rules=rules,
    )


@dataclasses.dataclass
class Validated:
    """A validated in-memory dataset: conformed valid rows, rejected rows with `reason`, report."""

    valid: pa.Table
    rejected: pa.Table
    report: ValidationReport


def split_by_reasons(
    contract: str, rules: dict[str, Rule], table: pa.Table, reasons: pa.Array
) -> Validated:
    """Split a conformed table into valid rows and rejected rows (with their `reason`)."""
    ok = pc.is_null(reasons)
    return Validated(
        valid=table.filter(ok),
        rejected=table.append_column("reason", reasons).filter(pc.invert(ok)),
        report=build_report(contract, rules, reasons),
    )
