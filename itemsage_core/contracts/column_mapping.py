"""Column mapping: a TOML file that maps a user's catalog columns onto the catalog contract.

See docs/data-contracts.md ("Column mapping"). A mapping is loaded and checked once on the driver
(`load_mapping`), checked against the input schema (`ColumnMapping.check_source`), then applied
per Arrow batch (`ColumnMapping.map_batch`), vectorised with Arrow compute. Converting an extra
column to a number or a boolean never loses a value silently: every present value that does not
convert is counted per column (`MappedBatch.failures`, summed with `add_failures`) and, with
`on_error = "reject"` (the default), rejects its row (`MappedBatch.rejects`).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from itemsage_core.contracts import column_types as ct
from itemsage_core.contracts.arrow_checks import as_array, valid_utf8
from itemsage_core.contracts.catalog_contract import CONTRACT_COLUMNS, conform_catalog
from itemsage_core.contracts.dense_features import DenseRule, parse_dense_rule
from itemsage_core.errors import ContractError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# parse = "number" / "boolean" make these types (the first is the default type).
CONVERTERS = {"number": ("double", "bigint"), "boolean": ("boolean",)}
PARSERS = ("list", *CONVERTERS)
RANGES = ("low", "high", "reject")
ON_ERROR = ("reject", "null")
EXTRA_TYPES = {
    "string": pa.string(),
    "double": pa.float64(),
    "bigint": pa.int64(),
    "boolean": pa.bool_(),
}
RULE_KEYS = {"from", "sep", "parse", "split", "join", "type", "range", "on_error"}
EXAMPLES = 3  # failed values kept per column
SHOWN_CHARS = 60  # of a failed value, in examples and reasons
_NUMBER = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"
# parse = "number": currency symbols and codes go, thousands separators (1,234,567 or the Indian
# 1,23,456) are checked and dropped, and "A - B" (also en/em dash, "to") is a range.
_CURRENCY = r"(?i)\b(?:rs\.?|inr|usd|us\$|eur|gbp)|\p{Sc}"
_GROUPED = (
    r"[-+]?(?:(?:\d{1,3}(?:,\d{3})+|\d{1,2}(?:,\d{2})+,\d{3}|\d+)(?:\.\d*)?|\.\d+)"
    r"(?:[eE][-+]?\d+)?"
)
_SPACE = r"[\s\p{Zs}]*"
_RANGE = (
    rf"^{_SPACE}(?P<low>{_GROUPED})(?:{_SPACE}(?:-|\x{{2013}}|\x{{2014}}|to){_SPACE}"
    rf"(?P<high>{_GROUPED}))?{_SPACE}$"
)
_TRUE, _FALSE = ["true", "t", "yes", "y", "1"], ["false", "f", "no", "n", "0"]


@dataclasses.dataclass(frozen=True)
class ColumnRule:
    """How one output column is made from one or more source columns."""

    target: str
    sources: tuple[str, ...]
    sep: str = " "
    parse: str | None = None
    split: str | None = None
    join: str | None = None
    type: str | None = None
    range: str = "low"
    on_error: str = "reject"

    @property
    def converts(self) -> bool:
        """True for an extra whose text is converted (to a number or a boolean)."""
        return self.type not in (None, "string")

    def apply(self, table: pa.Table) -> tuple[pa.Array, pa.Array | None]:
        """The output column and, for a converting rule, per row the text that failed to
        convert (null where it converted or was blank); None for other rules."""
        parts = [_as_text(as_array(table.column(s)), s) for s in self.sources]
        value = parts[0] if len(parts) == 1 else _concat(parts, self.sep)
        if self.parse == "list":
            value = _parse_list(value)
        if self.split is not None:
            value = _split(value, self.split)
        if self.join is not None:
            value = pc.binary_join(value, self.join)
        if not self.converts:
            return _blank_to_null(value), None
        text = pc.utf8_trim_whitespace(value)
        converted = self._convert(text)
        failed = pc.and_(
            pc.fill_null(pc.greater(pc.utf8_length(text), 0), False), pc.is_null(converted)
        )
        return converted, pc.if_else(failed, value, pa.scalar(None, pa.string()))

    def _convert(self, text: pa.Array) -> pa.Array:
        """Trimmed text to the rule's type; null where it does not convert."""
        if self.type == "boolean":
            low = pc.utf8_lower(text)
            return pc.if_else(
                pc.is_in(low, value_set=pa.array(_TRUE)),
                True,
                pc.if_else(
                    pc.is_in(low, value_set=pa.array(_FALSE)), False, pa.scalar(None, pa.bool_())
                ),
            )
        if self.parse == "number":
            number = _parse_number(text, self.range)
        else:
            number = pc.cast(
                pc.if_else(
                    pc.match_substring_regex(text, _NUMBER), text, pa.scalar(None, pa.string())
                ),
                pa.float64(),
            )
        number = pc.if_else(pc.is_finite(number), number, pa.scalar(None, pa.float64()))
        if self.type == "double":
            return number
        whole = pc.and_(pc.equal(number, pc.floor(number)), pc.less(pc.abs(number), 2.0**63))
        return pc.cast(
            pc.if_else(whole, number, pa.scalar(None, pa.float64())), pa.int64(), safe=False
        )


@dataclasses.dataclass(frozen=True)
class MappedBatch:
    """A batch after the mapping: its columns; per row, the failed conversions that reject it
    (null: none; None when no rule rejects); per converted extra column, its counts (values,
    failed, examples, on_error: see add_failures)."""

    table: pa.Table
    rejects: pa.Array | None
    failures: dict[str, dict]


@dataclasses.dataclass(frozen=True)
class ColumnMapping:
    """A checked mapping: contract features and extra columns, each made by a ColumnRule, and
    dense features, each by a DenseRule."""

    rules: tuple[ColumnRule, ...]
    passthrough: bool = True
    origin: str = "<mapping>"
    dense: tuple[DenseRule, ...] = ()

    @property
    def sources(self) -> set[str]:
        return {s for r in (*self.rules, *self.dense) for s in r.sources}

    def check_source(self, schema: pa.Schema) -> None:
        """Raise ContractError when the input lacks a source column the mapping names."""
        missing = sorted(self.sources - set(schema.names))
        if missing:
            raise ContractError(
                f"{self.origin}: source column(s) {missing} not in the catalog "
                f"(found: {', '.join(schema.names)})"
            )

    def converting(self) -> ColumnMapping:
        """The rules that convert extras alone (to count their failures on their columns)."""
        return dataclasses.replace(
            self, rules=tuple(r for r in self.rules if r.converts), passthrough=False, dense=()
        )

    def map_batch(self, data: pa.Table | pa.RecordBatch) -> MappedBatch:
        """Mapped columns, then (with passthrough) every source column no rule reads; with the
        rows that failed conversions reject, and the failures counted per column."""
        table = pa.table(data)  # a Table, or a RecordBatch from mapInArrow
        self.check_source(table.schema)
        fields, columns, failures, rejects = [], [], {}, []
        for rule in self.rules:
            value, failed = rule.apply(table)
            fields.append(pa.field(rule.target, value.type))
            columns.append(value)
            if failed is not None:
                failures[rule.target] = _failure_counts(value, failed, rule.on_error)
                if rule.on_error == "reject":
                    rejects.append(_reject_text(rule, failed))
        for rule in self.dense:
            fields.append(rule.field())
            columns.append(rule.apply(table))
        if self.passthrough:
            made = {f.name for f in fields}
            keep = [n for n in table.column_names if n not in self.sources and n not in made]
            fields += [table.schema.field(n) for n in keep]
            columns += [table.column(n) for n in keep]
        return MappedBatch(
            table=pa.Table.from_arrays(columns, schema=pa.schema(fields)),
            rejects=_join_rejects(rejects) if rejects else None,
            failures=failures,
        )

    def apply(self, data: pa.Table | pa.RecordBatch) -> pa.Table:
        """map_batch's table alone (schema checks, training: no row is judged there)."""
        return self.map_batch(data).table


def mapped(data: pa.Table | pa.RecordBatch, mapping: ColumnMapping | None) -> pa.Table:
    """Catalog rows (or an empty table of a schema) under `mapping`, as they are without one."""
    return mapping.apply(data) if mapping is not None else pa.table(data)


def conformed(data: pa.Table | pa.RecordBatch, mapping: ColumnMapping | None) -> pa.Table:
    """Raw catalog rows mapped, then conformed to the catalog contract: how every path (embed,
    featurize, index filters, training, lookups) reads a catalog's rows."""
    return conform_catalog(mapped(data, mapping))


def add_failures(total: dict[str, dict], part: dict[str, dict]) -> dict[str, dict]:
    """Add failed-conversion counts (MappedBatch.failures, or sums of them, e.g. from JSON) into
    `total` and return it: per column the present (non-blank) values, the failed ones, the first
    EXAMPLES failed texts in sorted order (so the sum does not depend on the order of the
    parts), and on_error."""
    for column, counts in part.items():
        into = total.setdefault(
            column, {"values": 0, "failed": 0, "examples": [], "on_error": counts["on_error"]}
        )
        into["values"] += counts["values"]
        into["failed"] += counts["failed"]
        into["examples"] = sorted({*into["examples"], *counts["examples"]})[:EXAMPLES]
    return total


def _failure_counts(value: pa.Array, failed: pa.Array, on_error: str) -> dict:
    examples = pc.unique(pc.utf8_slice_codeunits(failed.drop_null(), 0, SHOWN_CHARS))
    examples = examples.take(pc.sort_indices(examples)[:EXAMPLES]).to_pylist()
    n_failed = len(failed) - failed.null_count
    return {
        "values": len(value) - value.null_count + n_failed,
        "failed": n_failed,
        "examples": examples,
        "on_error": on_error,
    }


def _reject_text(rule: ColumnRule, failed: pa.Array) -> pa.Array:
    """Per row "column 'text' is not a TYPE" where the conversion failed, else null. The text is
    cut to SHOWN_CHARS, its ';' (the reasons' separator) written ','."""
    shown = pc.replace_substring(pc.utf8_slice_codeunits(failed, 0, SHOWN_CHARS), ";", ",")
    return pc.binary_join_element_wise(f"{rule.target} '", shown, f"' is not a {rule.type}", "")


def _join_rejects(texts: list[pa.Array]) -> pa.Array:
    """Per row, the non-null texts joined with ', ', or null when all are null."""
    parts = [pc.fill_null(pc.binary_join_element_wise(", ", t, ""), "") for t in texts]
    joined = pc.binary_join_element_wise(*parts, "")
    return pc.if_else(
        pc.equal(joined, ""), pa.scalar(None, pa.string()), pc.utf8_slice_codeunits(joined, 2)
    )


def load_mapping(path: str | Path) -> ColumnMapping:
    """Read and check a mapping TOML file; every problem is a ContractError naming the key."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ContractError(f"mapping file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ContractError(f"{path}: not valid TOML: {exc}") from None
    return parse_mapping(doc, origin=str(path))


def parse_mapping(doc: dict, origin: str = "<mapping>") -> ColumnMapping:
    """Check a mapping document (the parsed TOML) and build its rules."""
    unknown = set(doc) - {"features", "extras", "dense", "passthrough"}
    if unknown:
        raise ContractError(
            f"{origin}: unknown top-level key(s) {sorted(unknown)}; expected "
            "[features.NAME], [extras.NAME], [dense.NAME] and passthrough"
        )
    rules = []
    for section in ("features", "extras"):
        for target, spec in doc.get(section, {}).items():
            where = f"{origin}: [{section}.{target}]"
            if section == "features" and target not in CONTRACT_COLUMNS:
                raise ContractError(
                    f"{where}: '{target}' is not a catalog feature; use one of "
                    f"{', '.join(CONTRACT_COLUMNS)} or put it under [extras]"
                )
            if section == "extras" and target in CONTRACT_COLUMNS:
                raise ContractError(
                    f"{where}: '{target}' is a catalog feature; map it under [features]"
                )
            rules.append(_rule(where, target, spec, section))
    taken = {*CONTRACT_COLUMNS, *(r.target for r in rules)}
    dense = tuple(
        parse_dense_rule(f"{origin}: [dense.{target}]", target, spec, taken)
        for target, spec in doc.get("dense", {}).items()
    )
    if not rules and not dense:
        raise ContractError(f"{origin}: maps no columns")
    passthrough = doc.get("passthrough", True)
    if not isinstance(passthrough, bool):
        raise ContractError(f"{origin}: passthrough must be true or false")
    return ColumnMapping(rules=tuple(rules), passthrough=passthrough, origin=origin, dense=dense)


def _rule(where: str, target: str, spec, section: str) -> ColumnRule:
    if not isinstance(spec, dict):
        raise ContractError(f"{where}: must be a table with at least a 'from' key")
    unknown = set(spec) - RULE_KEYS
    if unknown:
        raise ContractError(
            f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(RULE_KEYS)}"
        )
    sources = spec.get("from")
    if isinstance(sources, str):
        sources = [sources]
    if not sources or not all(isinstance(s, str) and s for s in sources):
        raise ContractError(f"{where}: 'from' must be a column name or a list of column names")
    parse, type_ = spec.get("parse"), spec.get("type")
    if parse not in (None, *PARSERS):
        raise ContractError(f"{where}: parse must be one of {PARSERS}")
    if type_ not in (None, *EXTRA_TYPES):
        raise ContractError(f"{where}: type must be one of {sorted(EXTRA_TYPES)}")
    if section == "features" and "type" in spec:
        raise ContractError(f"{where}: a feature's type is fixed by the contract; drop 'type'")
    if parse in CONVERTERS:
        if section == "features":
            raise ContractError(f'{where}: parse = "{parse}" is for extras; a feature is text')
        type_ = type_ or CONVERTERS[parse][0]
        if type_ not in CONVERTERS[parse]:
            raise ContractError(
                f'{where}: parse = "{parse}" makes {" or ".join(CONVERTERS[parse])}, not {type_}'
            )
    if "range" in spec and parse != "number":
        raise ContractError(f'{where}: range needs parse = "number"')
    if spec.get("range", "low") not in RANGES:
        raise ContractError(f"{where}: range must be one of {RANGES}")
    if "on_error" in spec and type_ in (None, "string"):
        raise ContractError(
            f"{where}: on_error needs a conversion (type double, bigint or boolean)"
        )
    if spec.get("on_error", "reject") not in ON_ERROR:
        raise ContractError(f"{where}: on_error must be one of {ON_ERROR}")
    for key in ("sep", "split", "join"):
        if key in spec and (not isinstance(spec[key], str) or spec[key] == ""):
            raise ContractError(f"{where}: '{key}' must be a non-empty string")
    makes_list = parse == "list" or "split" in spec
    if (
        makes_list
        and "join" not in spec
        and (section == "extras" or CONTRACT_COLUMNS[target] != ct.STRING_LIST)
    ):
        raise ContractError(
            f'{where}: parse = "list" and split make a list; add '
            f"join = \"...\" to make '{target}' a string"
        )
    if "join" in spec and not makes_list:
        raise ContractError(f"{where}: join needs a list (from parse or split)")
    return ColumnRule(
        target=target,
        sources=tuple(sources),
        sep=spec.get("sep", " "),
        parse=parse,
        split=spec.get("split"),
        join=spec.get("join"),
        type=type_,
        range=spec.get("range", "low"),
        on_error=spec.get("on_error", "reject"),
    )


def _as_text(column: pa.Array, name: str) -> pa.Array:
    """A source column as text: strings stay, numbers and booleans are formatted, lists of
    strings kept, bytes decoded (U+FFFD for bytes that are not UTF-8); any other type is a
    schema-level error."""
    t = column.type
    try:
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            return valid_utf8(column.cast(pa.list_(pa.string()), safe=False))
        return valid_utf8(column.cast(pa.string(), safe=False))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise ContractError(
            f"mapping source column '{name}' has type {t}, which cannot be read as text"
        ) from None


def _concat(parts: list[pa.Array], sep: str) -> pa.Array:
    """Join several text columns row-wise with `sep`, skipping null and blank values.

    (binary_join_element_wise's own null skipping drops rows in some pyarrow versions.)
    """
    n = len(parts[0])
    texts = [pc.binary_join(p, sep) if pa.types.is_list(p.type) else p for p in parts]
    values = pa.concat_arrays([t.cast(pa.string()) for t in texts])
    rows = np.tile(np.arange(n), len(parts))
    keep = pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(values)), 0), False)
    keep = keep.to_numpy(zero_copy_only=False)
    order = np.argsort(rows[keep], kind="stable")
    lists = _regroup(values.filter(keep).take(order), rows[keep][order], n)
    return pc.binary_join(lists, sep)


def _parse_list(text: pa.Array) -> pa.Array:
    """Parse list-like strings such as '["a", "b"]' or "['a']" into list<string>.

    A string without brackets is a one-item list.
    """
    inner = pc.replace_substring_regex(text, r"^\s*\[\s*[\"']?|[\"']?\s*\]\s*$", "")
    return pc.split_pattern_regex(inner, r"[\"']\s*,\s*[\"']")


def _split(value: pa.Array, sep: str) -> pa.Array:
    """Split each string (or each item of each list) on `sep` into trimmed, non-empty items."""
    if pa.types.is_list(value.type):
        items, item_row = pc.list_flatten(value), pc.list_parent_indices(value).to_numpy()
    else:
        items, item_row = value, np.arange(len(value))
    parts = pc.split_pattern(items, sep)
    words = pc.utf8_trim_whitespace(pc.list_flatten(parts))
    rows = item_row[pc.list_parent_indices(parts).to_numpy()]
    keep = pc.fill_null(pc.greater(pc.utf8_length(words), 0), False)
    return _regroup(
        pc.filter(words, keep),
        rows[keep.to_numpy(zero_copy_only=False)],
        len(value),
        pc.is_null(value),
    )


def _regroup(values: pa.Array, rows: np.ndarray, n: int, nulls: pa.Array | None = None) -> pa.Array:
    """A list array of n rows whose row i holds the `values` whose `rows` entry is i (`rows` is
    sorted); rows where `nulls` is true are null."""
    counts = np.bincount(rows, minlength=n)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values, mask=nulls)


def _parse_number(text: pa.Array, range_: str) -> pa.Array:
    """parse = "number": trimmed text such as '£3.42', '$1,234.50', 'Rs. 1,299' or a range
    '£6.99 - £10.49' to float64 (a range's low or high end, or null with range = "reject");
    null where it is no such number."""
    parts = pc.extract_regex(pc.replace_substring_regex(text, _CURRENCY, ""), _RANGE)
    low, high = (
        pc.cast(
            pc.if_else(
                pc.equal(part, ""),
                pa.scalar(None, pa.string()),
                pc.replace_substring(part, ",", ""),
            ),
            pa.float64(),
        )
        for part in (pc.struct_field(parts, "low"), pc.struct_field(parts, "high"))
    )
    if range_ == "low":
        return pc.min_element_wise(low, high)
    if range_ == "high":
        return pc.max_element_wise(low, high)
    return pc.if_else(pc.is_null(high), low, pa.scalar(None, pa.float64()))


def _blank_to_null(value: pa.Array) -> pa.Array:
    if pa.types.is_string(value.type):
        return pc.if_else(
            pc.equal(pc.utf8_trim_whitespace(value), ""), pa.scalar(None, pa.string()), value
        )
    return value
