"""Vectorised row checks on Arrow arrays, shared by the catalog and engagement contracts.

Each check returns a boolean mask (True = row violates the rule) with no nulls, so masks can be
combined freely. Nothing here loops over rows in Python.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def as_array(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous array (Arrow compute on list offsets is simplest without chunks)."""
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    return column


REPLACEMENT = "\ufffd"


def valid_utf8(column: pa.Array) -> pa.Array:
    """A string or list<string> array whose bytes that are not UTF-8 become U+FFFD (Python's
    errors="replace"); the array itself when it is valid, which is the usual, fast case."""
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        child = column.values  # (each .values access makes a new wrapper)
        if valid_utf8(child) is child:
            return column
        column = pa.concat_arrays([column])  # unsliced: from_arrays cannot mask a slice
        return type(column).from_arrays(
            column.offsets, valid_utf8(column.values), mask=column.is_null()
        )
    try:
        column.validate(full=True)
        return column
    except pa.ArrowInvalid:
        raw = column.cast(
            pa.large_binary() if pa.types.is_large_string(column.type) else pa.binary()
        ).to_pylist()
        return pa.array(
            [None if v is None else v.decode("utf-8", "replace") for v in raw], column.type
        )


def holds_replacement(column: pa.Array) -> np.ndarray:
    """Rows of a string array whose text holds U+FFFD (undecodable bytes)."""
    return pc.fill_null(pc.match_substring(column, REPLACEMENT), False).to_numpy(
        zero_copy_only=False
    )


def blank_strings(column: pa.Array) -> pa.Array:
    """Rows whose string is null, empty or only whitespace."""
    trimmed = pc.utf8_trim_whitespace(column)
    return pc.fill_null(pc.equal(pc.utf8_length(trimmed), 0), True)


def rows_with(parent_rows: np.ndarray, bad: np.ndarray, n_rows: int) -> np.ndarray:
    """Mask of rows that own at least one bad child (children mapped to rows by `parent_rows`)."""
    mask = np.zeros(n_rows, dtype=bool)
    mask[parent_rows[bad]] = True
    return mask


def vector_problems(vectors: pa.Array, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """For a `list<float>` array: (null or wrong length, holds NaN/inf/null values) masks."""
    n = len(vectors)
    lengths = pc.list_value_length(vectors)
    wrong_dim = pc.fill_null(pc.not_equal(lengths, dim), True).to_numpy(zero_copy_only=False)
    values = pc.list_flatten(vectors)
    parents = pc.list_parent_indices(vectors).to_numpy()
    finite = pc.fill_null(pc.is_finite(values), False).to_numpy(zero_copy_only=False)
    return wrong_dim, rows_with(parents, ~finite, n)


def nested_vector_problems(
    vector_lists: pa.Array, dim: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a `list<list<float>>` array: (vector count per row, any vector of wrong dimension or
    null, any vector holding NaN/inf/null values). A null list counts as zero vectors."""
    n = len(vector_lists)
    counts = pc.fill_null(pc.list_value_length(vector_lists), 0).to_numpy(zero_copy_only=False)
    inner = pc.list_flatten(vector_lists)
    owners = pc.list_parent_indices(vector_lists).to_numpy()
    wrong_dim, not_finite = vector_problems(inner, dim)
    return counts, rows_with(owners, wrong_dim, n), rows_with(owners, not_finite, n)


def reasons_column(named_masks: list[tuple[str, pa.Array | np.ndarray]]) -> pa.Array:
    """Per row, the '; '-joined texts of the rules it violates, or null when it violates none.

    `named_masks` pairs a reason text (a string, or a string array with one text per row) with
    its boolean mask.
    """
    if not named_masks:
        raise ValueError("reasons_column needs at least one rule")
    # Each part carries its own "; " prefix and no nulls: binary_join_element_wise's null
    # skipping drops all-null rows in some pyarrow versions, so it is avoided.
    parts = [
        pc.if_else(pa.array(mask, pa.bool_()), pc.binary_join_element_wise("; ", text, ""), "")
        for text, mask in named_masks
    ]
    joined = pc.utf8_ltrim(pc.binary_join_element_wise(*parts, ""), characters="; ")
    return pc.if_else(pc.equal(joined, ""), pa.scalar(None, pa.string()), joined)
