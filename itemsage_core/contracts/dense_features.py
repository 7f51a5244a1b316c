"""Dense feature columns: pretrained embeddings (a sentence encoder's, say) that the encoder takes
as tokens beside the images and the text (docs/data-contracts.md, "Dense features").

A mapping declares each one (`[dense.NAME]`, with `from` and `dim`); the mapped table carries the
declaration on the column's Arrow field (`DENSE_DIM_KEY` metadata), so every check downstream finds
the dense columns and their dimension in the schema alone (`dense_columns`). A row's value is a
list<float> of exactly `dim` finite numbers, or null (the feature is absent: the encoder masks it,
as it does a product without images).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from itemsage_core.contracts import column_types as ct
from itemsage_core.contracts.arrow_checks import as_array, vector_problems
from itemsage_core.contracts.validation_report import RowProblems, Rule
from itemsage_core.errors import ContractError

DENSE_DIM_KEY = b"itemsage.dense_dim"
NAME = re.compile(r"^[a-z][a-z0-9_]*$")
MAX_DIM = 65_536

DENSE_DIM_MISMATCH = Rule(
    "dense_dim_mismatch",
    "dense",
    "a dense feature's vector is not of the dimension its mapping declares",
)
DENSE_NOT_FINITE = Rule(
    "dense_not_finite", "dense", "a dense feature's vector holds NaN, +-inf or null"
)


@dataclasses.dataclass(frozen=True)
class DenseRule:
    """`[dense.NAME]`: column `source` becomes dense feature `target` of `dim` floats."""

    target: str
    source: str
    dim: int

    @property
    def sources(self) -> tuple[str, ...]:
        return (self.source,)

    def field(self) -> pa.Field:
        return pa.field(self.target, ct.ARROW_TYPES[ct.VECTOR], metadata=dense_metadata(self.dim))

    def apply(self, table: pa.Table) -> pa.Array:
        column = as_array(table.column(self.source))
        ct.check_type("catalog", f"{self.target} (from {self.source})", column.type, ct.VECTOR)
        return ct.coerce(column, ct.VECTOR)


def dense_metadata(dim: int) -> dict[bytes, bytes]:
    return {DENSE_DIM_KEY: str(dim).encode()}


def parse_dense_rule(where: str, target: str, spec, reserved) -> DenseRule:
    """A `[dense.NAME]` table checked: a ContractError names the key at fault."""
    if not isinstance(spec, dict):
        raise ContractError(f"{where}: must be a table with 'from' and 'dim' keys")
    unknown = set(spec) - {"from", "dim"}
    if unknown:
        raise ContractError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: ['dim', 'from']")
    if not NAME.match(target) or target in reserved:
        raise ContractError(
            f"{where}: a dense feature's name is lower-case letters, digits and '_', and not a "
            "catalog column"
        )
    source, dim = spec.get("from"), spec.get("dim")
    if not isinstance(source, str) or not source:
        raise ContractError(f"{where}: 'from' must be a column name")
    if not isinstance(dim, int) or isinstance(dim, bool) or not 1 <= dim <= MAX_DIM:
        raise ContractError(f"{where}: 'dim' must be a whole number from 1 to {MAX_DIM}")
    return DenseRule(target, source, dim)


def dense_columns(schema: pa.Schema) -> dict[str, int]:
    """The dense features a mapped catalog declares: name -> dimension, in column order."""
    return {
        f.name: int(f.metadata[DENSE_DIM_KEY])
        for f in schema
        if f.metadata and DENSE_DIM_KEY in f.metadata
    }


def dense_row_problems(table: pa.Table, problems: RowProblems) -> None:
    """Add the dense rules' rows (every declared column checked) to `problems`."""
    dims = dense_columns(table.schema)
    if not dims:
        return
    n = table.num_rows
    for rule, pick in ((DENSE_DIM_MISMATCH, 0), (DENSE_NOT_FINITE, 1)):
        mask, detail = np.zeros(n, bool), pa.nulls(n, pa.string())
        for name, dim in dims.items():
            vectors = as_array(table.column(name))
            present = vectors.is_valid().to_numpy(zero_copy_only=False)
            bad = vector_problems(vectors, dim)[pick] & present
            text = (
                pc.binary_join_element_wise(
                    f"{name} has ",
                    pc.list_value_length(vectors).cast(pa.string()),
                    f" values, not {dim}",
                    "",
                )
                if pick == 0
                else pa.array([f"{name} holds NaN, inf or null"] * n, pa.string())
            )
            detail = pc.if_else(pa.array(bad & ~mask), text, detail)
            mask |= bad
        problems.add(rule, mask, detail)


def declared_dense(mapping) -> dict[str, int]:
    """The dense features a ColumnMapping (or None) declares: name -> dimension."""
    return {rule.target: rule.dim for rule in mapping.dense} if mapping else {}


def require_dense(found: dict[str, int], wanted: dict[str, int], where: str = "catalog") -> None:
    """ContractError unless the catalog declares (`found`: dense_columns of its mapped schema,
    or declared_dense of its mapping) every dense feature a model reads, at its dimension."""
    for name, dim in wanted.items():
        if name not in found:
            raise ContractError(
                f"{where}: the model reads dense feature '{name}' ({dim}-d), which the catalog "
                f"does not declare: featurize the catalog (itemsage featurize) and pass its "
                f"mapping (--mapping OUT/mapping.toml)"
            )
        if found[name] != dim:
            raise ContractError(
                f"{where}: dense feature '{name}' is {found[name]}-d, the model reads {dim}-d: "
                "featurize with the model's text encoder"
            )
