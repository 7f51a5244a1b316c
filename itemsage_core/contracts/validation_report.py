"""Row-level validation results: which rows failed which rule, and counts per rule.

A contract's checks fill a `RowProblems`: per `Rule` (each defined once, in its contract's rule
table), the mask of rows that break it and each row's detail. Counts per rule come from the
masks; only at the end is each row's `reason` rendered, the '; '-joined list of `rule: detail`
texts (see docs/data-contracts.md), which is what rejected and quarantined rows carry.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from itemsage_core.contracts.arrow_checks import as_array, reasons_column


@dataclasses.dataclass(frozen=True)
class Rule:
    """A row-level rule of a data contract."""

    name: str
    column: str
    description: str


def rule_table(*rules: Rule) -> dict[str, Rule]:
    """A contract's rules by name (a name may appear only once)."""
    table = {r.name: r for r in rules}
    if len(table) != len(rules):
        raise ValueError(f"rule names appear more than once: {[r.name for r in rules]}")
    return table


Detail = str | pa.Array | pa.ChunkedArray


class RowProblems:
    """The row-level problems of one table: per rule, the rows that break it and the detail shown
    for each (one text, or a string array with a text per row), in the order the checks ran."""

    def __init__(self, rows: int):
        self.rows = rows
        self._found: list[tuple[Rule, np.ndarray, Detail]] = []

    def add(self, rule: Rule, mask: pa.Array | pa.ChunkedArray | np.ndarray, detail: Detail):
        """Record that the rows where `mask` (booleans, no nulls) holds break `rule`."""
        if any(rule.name == seen.name for seen, _, _ in self._found):
            raise ValueError(f"rule {rule.name} is already checked")
        if not isinstance(mask, np.ndarray):
            mask = as_array(mask).to_numpy(zero_copy_only=False)
        mask = np.asarray(mask, dtype=bool)
        if len(mask) != self.rows:
            raise ValueError(f"rule {rule.name}: {len(mask)} mask rows for {self.rows} rows")
        self._found.append((rule, mask, detail))

    def broken(self) -> np.ndarray:
        """Mask of the rows that break at least one rule."""
        found = np.zeros(self.rows, dtype=bool)
        for _, mask, _ in self._found:
            found |= mask
        return found

    @property
    def rejected(self) -> int:
        return int(self.broken().sum())

    def counts(self) -> dict[str, int]:
        """Rows breaking each broken rule, in the order the rendered reasons first name them."""
        first = {
            i: (int(mask.argmax()), i, rule.name, int(mask.sum()))
            for i, (rule, mask, _) in enumerate(self._found)
            if mask.any()
        }
        return {name: count for _, _, name, count in sorted(first.values())}

    def render(self) -> pa.Array:
        """Per row, its reason: the '; '-joined `rule: detail` texts, or null for a valid row."""
        return reasons_column(
            [
                (
                    f"{rule.name}: {detail}"
                    if isinstance(detail, str)
                    else pc.binary_join_element_wise(f"{rule.name}: ", detail, ""),
                    mask,
                )
                for rule, mask, detail in self._found
            ]
        )


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


def build_report(contract: str, rules: dict[str, Rule], problems: RowProblems) -> ValidationReport:
    """Report for one dataset from its row problems."""
    rejected = problems.rejected
    return ValidationReport(
        contract=contract,
        rows=problems.rows,
        valid=problems.rows - rejected,
        rejected=rejected,
        rule_counts=problems.counts(),
        rules=rules,
    )


def partial_counts(report: ValidationReport) -> dict:
    """A batch's report as a JSON-able partial (rows, rejected, rule_counts) for summed_report."""
    return {"rows": report.rows, "rejected": report.rejected, "rule_counts": report.rule_counts}


def summed_report(
    contract: str, rules: dict[str, Rule], partials: list[dict], conversions: dict | None = None
) -> ValidationReport:
    """The report of a dataset checked batch by batch (in one process or many tasks): the sum of
    its batches' partials, with the mapping's failed conversions already summed."""
    rule_counts: dict[str, int] = {}
    for part in partials:
        for name, count in part["rule_counts"].items():
            rule_counts[name] = rule_counts.get(name, 0) + count
    rows = sum(p["rows"] for p in partials)
    rejected = sum(p["rejected"] for p in partials)
    return ValidationReport(
        contract=contract,
        rows=rows,
        valid=rows - rejected,
        rejected=rejected,
        rule_counts=rule_counts,
        rules=rules,
        conversions=conversions or {},
    )


@dataclasses.dataclass
class Validated:
    """A validated in-memory dataset: conformed valid rows, rejected rows with `reason`, report."""

    valid: pa.Table
    rejected: pa.Table
    report: ValidationReport


def split_by_problems(
    contract: str, rules: dict[str, Rule], table: pa.Table, problems: RowProblems
) -> Validated:
    """Split a conformed table into valid rows and rejected rows (with their rendered `reason`)."""
    broken = pa.array(problems.broken(), pa.bool_())
    return Validated(
        valid=table.filter(pc.invert(broken)),
        rejected=table.append_column("reason", problems.render()).filter(broken),
        report=build_report(contract, rules, problems),
    )
