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

from itemsage_core import column_types as ct
from itemsage_core.arrow_checks import as_array, valid_utf8
from itemsage_core.catalog_contract import CONTRACT_COLUMNS
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
EXTRA_TYPES = {"string": pa.string(), "double": pa.float64(), "bigint": pa.int64(),
               "boolean": pa.bool_()}
RULE_KEYS = {"from", "sep", "parse", "split", "join", "type", "range", "on_error"}
EXAMPLES = 3  # failed values kept per column
_NUMBER = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"
# parse = "number": currency symbols and codes go, thousands separators (1,234,567 or the Indian
# 1,23,456) are checked and dropped, and "A - B" (also en/em dash, "to") is a range.
_CURRENCY = r"(?i)\b(?:rs\.?|inr|usd|us\$|eur|gbp)|\p{Sc}"
_GROUPED = (r"[-+]?(?:(?:\d{1,3}(?:,\d{3})+|\d{1,2}(?:,\d{2})+,\d{3}|\d+)(?:\.\d*)?|\.\d+)"
            r"(?:[eE][-+]?\d+)?")
_SPACE = r"[\s\p{Zs}]*"
_RANGE = (rf"^{_SPACE}(?P<low>{_GROUPED})(?:{_SPACE}(?:-|\x{{2013}}|\x{{2014}}|to){_SPACE}"
          rf"(?P<high>{_GROUPED}))?{_SPACE}$")
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

    def apply(self, table: pa.Table) -> pa.Array:
        parts = [_as_text(as_array(table.column(s)), s) for s in self.sources]
        value = parts[0] if len(parts) == 1 else _concat(parts, self.sep)
        if self.parse == "list":
            value = _parse_list(value)
        if self.split is not None:
            value = _split(value, self.split)
        if self.join is not None:
            value = pc.binary_join(value, self.join)
        if self.type is not None:
            value = _cast_text(value, self.type)
        return _blank_to_null(value)


@dataclasses.dataclass(frozen=True)
class ColumnMapping:
    """A checked mapping: contract features and extra columns, each made by a ColumnRule."""

    rules: tuple[ColumnRule, ...]
    passthrough: bool = True
    origin: str = "<mapping>"

    @property
    def sources(self) -> set[str]:
        return {s for r in self.rules for s in r.sources}

    def check_source(self, schema: pa.Schema) -> None:
        """Raise ContractError when the input lacks a source column the mapping names."""
        missing = sorted(self.sources - set(schema.names))
        if missing:
            raise ContractError(f"{self.origin}: source column(s) {missing} not in the catalog "
                                f"(found: {', '.join(schema.names)})")

    def apply(self, data: pa.Table | pa.RecordBatch) -> pa.Table:
        """Mapped columns, then (with passthrough) every source column no rule reads."""
        table = pa.table(data)  # a Table, or a RecordBatch from mapInArrow
        self.check_source(table.schema)
        names = [r.target for r in self.rules]
        columns = [r.apply(table) for r in self.rules]
        if self.passthrough:
            keep = [n for n in table.column_names if n not in self.sources and n not in names]
            names += keep
            columns += [table.column(n) for n in keep]
        return pa.Table.from_arrays(columns, names=names)


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
    unknown = set(doc) - {"features", "extras", "passthrough"}
    if unknown:
        raise ContractError(f"{origin}: unknown top-level key(s) {sorted(unknown)}; expected "
                            "[features.NAME], [extras.NAME] and passthrough")
    rules = []
    for section in ("features", "extras"):
        for target, spec in doc.get(section, {}).items():
            where = f"{origin}: [{section}.{target}]"
            if section == "features" and target not in CONTRACT_COLUMNS:
                raise ContractError(f"{where}: '{target}' is not a catalog feature; use one of "
                                    f"{', '.join(CONTRACT_COLUMNS)} or put it under [extras]")
            if section == "extras" and target in CONTRACT_COLUMNS:
                raise ContractError(f"{where}: '{target}' is a catalog feature; map it under "
                                    "[features]")
            rules.append(_rule(where, target, spec, section))
    if not rules:
        raise ContractError(f"{origin}: maps no columns")
    passthrough = doc.get("passthrough", True)
    if not isinstance(passthrough, bool):
        raise ContractError(f"{origin}: passthrough must be true or false")
    return ColumnMapping(rules=tuple(rules), passthrough=passthrough, origin=origin)


def _rule(where: str, target: str, spec, section: str) -> ColumnRule:
    if not isinstance(spec, dict):
        raise ContractError(f"{where}: must be a table with at least a 'from' key")
    unknown = set(spec) - RULE_KEYS
    if unknown:
        raise ContractError(
            f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(RULE_KEYS)}")
    sources = spec.get("from")
    if isinstance(sources, str):
        sources = [sources]
    if not sources or not all(isinstance(s, str) and s for s in sources):
        raise ContractError(f"{where}: 'from' must be a column name or a list of column names")
    if spec.get("parse") not in (None, *PARSERS):
        raise ContractError(f"{where}: parse must be one of {PARSERS}")
    if spec.get("type") not in (None, *EXTRA_TYPES):
        raise ContractError(f"{where}: type must be one of {sorted(EXTRA_TYPES)}")
    if section == "features" and "type" in spec:
        raise ContractError(f"{where}: a feature's type is fixed by the contract; drop 'type'")
    for key in ("sep", "split", "join"):
        if key in spec and (not isinstance(spec[key], str) or spec[key] == ""):
            raise ContractError(f"{where}: '{key}' must be a non-empty string")
    makes_list = "parse" in spec or "split" in spec
    if makes_list and "join" not in spec and (
            section == "extras" or CONTRACT_COLUMNS[target] != ct.STRING_LIST):
        raise ContractError(f"{where}: parse/split make a list; add join = \"...\" to make "
                            f"'{target}' a string")
    if "join" in spec and not makes_list:
        raise ContractError(f"{where}: join needs a list (from parse or split)")
    return ColumnRule(target=target, sources=tuple(sources), sep=spec.get("sep", " "),
                      parse=spec.get("parse"), split=spec.get("split"), join=spec.get("join"),
                      type=spec.get("type"))


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
        raise ContractError(f"mapping source column '{name}' has type {t}, which cannot be read "
                            "as text") from None


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
    return _regroup(pc.filter(words, keep), rows[keep.to_numpy(zero_copy_only=False)], len(value),
                    pc.is_null(value))


def _regroup(values: pa.Array, rows: np.ndarray, n: int, nulls: pa.Array | None = None
             ) -> pa.Array:
    """A list array of n rows whose row i holds the `values` whose `rows` entry is i (`rows` is
    sorted); rows where `nulls` is true are null."""
    counts = np.bincount(rows, minlength=n)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values, mask=nulls)


def _cast_text(value: pa.Array, type_name: str) -> pa.Array:
    """Text to an extra column's type; a value that does not parse becomes null."""
    target = EXTRA_TYPES[type_name]
    if type_name == "string":
        return value
    text = pc.utf8_trim_whitespace(value)
    if type_name == "boolean":
        low = pc.utf8_lower(text)
        return pc.if_else(pc.is_in(low, value_set=pa.array(_TRUE)), True,
                          pc.if_else(pc.is_in(low, value_set=pa.array(_FALSE)), False,
                                     pa.scalar(None, pa.bool_())))
    numeric = pc.if_else(pc.match_substring_regex(text, _NUMBER), text,
                         pa.scalar(None, pa.string()))
    if type_name == "bigint":
        return pc.cast(pc.cast(numeric, pa.float64()), target, safe=False)
    return pc.cast(numeric, target)


def _blank_to_null(value: pa.Array) -> pa.Array:
    if pa.types.is_string(value.type):
        return pc.if_else(pc.equal(pc.utf8_trim_whitespace(value), ""),
                          pa.scalar(None, pa.string()), value)
    return value
