"""Schema-level column types of the data contracts, and coercion of input columns onto them.

A column whose Arrow type cannot carry its contract type is a schema-level problem: it stops the
run with a ContractError naming the contract, the column, the expected and the found type.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.types as pat

from itemsage_core.contracts.arrow_checks import as_array, valid_utf8
from itemsage_core.errors import ContractError

STRING = "string"
STRING_LIST = "list<string>"
VECTOR = "list<float>"
VECTOR_LIST = "list<list<float>>"
TIMESTAMP = "timestamp"

ARROW_TYPES: dict[str, pa.DataType] = {
    STRING: pa.string(),
    STRING_LIST: pa.list_(pa.string()),
    VECTOR: pa.list_(pa.float32()),
    VECTOR_LIST: pa.list_(pa.list_(pa.float32())),
    TIMESTAMP: pa.timestamp("us", tz="UTC"),
}


def _is_text(t: pa.DataType) -> bool:
    if pat.is_dictionary(t):
        return _is_text(t.value_type)
    return (
        pat.is_string(t)
        or pat.is_large_string(t)
        or pat.is_binary(t)
        or pat.is_large_binary(t)
        or pat.is_null(t)
    )


def _is_list_of(t: pa.DataType, inner) -> bool:
    return (pat.is_list(t) or pat.is_large_list(t)) and inner(t.value_type)


def _is_vector(t: pa.DataType) -> bool:
    return _is_list_of(t, lambda v: pat.is_floating(v) or pat.is_null(v)) or pat.is_null(t)


ACCEPTS = {
    STRING: _is_text,
    STRING_LIST: lambda t: _is_text(t) or _is_list_of(t, _is_text),
    VECTOR: _is_vector,
    VECTOR_LIST: lambda t: _is_list_of(t, _is_vector) or pat.is_null(t),
    TIMESTAMP: lambda t: pat.is_timestamp(t) or pat.is_date(t) or pat.is_null(t),
}


def check_type(
    contract: str, name: str, arrow_type: pa.DataType, kind: str, rows: int | None = None
) -> None:
    """Raise ContractError unless a column of `arrow_type` can be coerced to contract `kind`."""
    if not ACCEPTS[kind](arrow_type):
        affected = "all rows" if rows is None else f"all {rows} rows"
        raise ContractError(
            f"{contract} column '{name}' must be {kind}, found {arrow_type} "
            f"(schema-level: affects {affected})"
        )


def coerce(column: pa.Array, kind: str) -> pa.Array:
    """Cast an accepted column to its contract Arrow type (a plain string -> a 1-item list).
    Text (strings or bytes) that is not valid UTF-8 gets U+FFFD for its bad bytes."""
    target = ARROW_TYPES[kind]
    if pat.is_dictionary(column.type):
        column = column.dictionary_decode()
    if kind == STRING_LIST and _is_text(column.type):
        text = valid_utf8(column.cast(pa.string(), safe=False))
        present = text.is_valid().to_numpy(zero_copy_only=False)
        offsets = np.concatenate([[0], np.cumsum(present)]).astype(np.int32)
        return pa.ListArray.from_arrays(pa.array(offsets), text.drop_null(), mask=text.is_null())
    if kind in (STRING, STRING_LIST):
        return valid_utf8(column.cast(target, safe=False))  # unsafe: no UTF-8 check here
    return column.cast(target)


def contract_schema(columns: dict[str, str], extras: pa.Schema | None = None) -> pa.Schema:
    """Arrow schema of a conformed dataset: the contract columns in order, then extras."""
    fields = [pa.field(n, ARROW_TYPES[k]) for n, k in columns.items()]
    return pa.schema(fields + (list(extras) if extras is not None else []))


def conform_columns(table: pa.Table, columns: dict[str, str]) -> pa.Table:
    """Contract columns in contract order and types (an absent one as nulls), then the extras
    unchanged. The caller has checked the schema."""
    arrays = [
        coerce(as_array(table.column(n)), k)
        if n in table.column_names
        else pa.nulls(table.num_rows, ARROW_TYPES[k])
        for n, k in columns.items()
    ]
    extras = [f for f in table.schema if f.name not in columns]
    arrays += [table.column(f.name) for f in extras]
    return pa.Table.from_arrays(arrays, schema=contract_schema(columns, pa.schema(extras)))
