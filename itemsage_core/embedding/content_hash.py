"""A per-product hash of the encoder's inputs, so an incremental refresh re-encodes only changes.

It covers the 12 text features (null and empty kept apart, list items kept apart), the image
vectors (values, order and count) and every other list<float> column (the dense features,
contracts/dense_features.py: their values), and nothing else: a price change does not re-encode a
product. A catalog without dense features hashes as it did before they existed.
Vectorised: pandas' stable 64-bit hashing for text, a position-weighted sum for vectors.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from itemsage_core.contracts.arrow_checks import as_array
from itemsage_core.contracts.catalog_contract import (
    CONTRACT_COLUMNS,
    IMAGE_EMBEDDINGS,
    MAX_IMAGES,
    TEXT_FEATURES,
)

_KEY = "itemsage-content"  # 16 bytes, as pandas requires
_ITEM_SEP = "\x1f"


def _text_values(column: pa.Array) -> np.ndarray:
    if pa.types.is_list(column.type):
        column = pc.binary_join(column, _ITEM_SEP)
    return column.to_numpy(zero_copy_only=False)  # None stays None, "" stays ""


def _weights(size: int) -> np.ndarray:
    return np.random.default_rng(20221).integers(
        1, 2**63, size=max(size, 1), dtype=np.uint64
    ) | np.uint64(1)


def _image_hash(column: pa.Array) -> np.ndarray:
    """Per row: sum of (value bits x a fixed pseudo-random weight per position), wrapping."""
    counts = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False)
    vectors = pc.list_flatten(column)
    dims = pc.fill_null(pc.list_value_length(vectors), 0).to_numpy(zero_copy_only=False)
    values = pc.list_flatten(vectors).to_numpy(zero_copy_only=False)
    bits = values.astype(np.float32).view(np.uint32).astype(np.uint64)
    row_first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    if len(dims) and dims[0] > 0 and (dims == dims[0]).all() and counts.max() <= 4 * MAX_IMAGES:
        hashed = _uniform_dim_hash(bits.reshape(len(dims), dims[0]), counts, row_first)
    else:
        hashed = _ragged_hash(bits, dims, counts)
    return hashed ^ (counts.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))


def _uniform_dim_hash(bits: np.ndarray, counts: np.ndarray, row_first: np.ndarray) -> np.ndarray:
    """_ragged_hash when every vector has one dimension d (the usual case), 10x faster: the
    j-th vector of a row takes weights [j*d, (j+1)*d), one integer matmul per j (so only for
    rows of few vectors: a quarantined row may hold thousands)."""
    d = bits.shape[1]
    weights = _weights(int(counts.max(initial=0)) * d)
    nth = np.arange(len(bits)) - np.repeat(row_first, counts)
    per_vector = np.empty(len(bits), np.uint64)
    for j in range(int(nth.max(initial=-1)) + 1):
        chosen = np.flatnonzero(nth == j)
        per_vector[chosen] = bits[chosen] @ weights[j * d : (j + 1) * d]
    hashed = np.zeros(len(counts), np.uint64)
    nonempty = counts > 0
    if nonempty.any():
        hashed[nonempty] = np.add.reduceat(per_vector, row_first[nonempty])
    return hashed


def _ragged_hash(bits: np.ndarray, dims: np.ndarray, counts: np.ndarray) -> np.ndarray:
    vector_end = np.cumsum(dims)
    row_vectors = np.cumsum(counts)
    row_end = np.where(
        row_vectors > 0, vector_end[np.maximum(row_vectors - 1, 0)] if len(vector_end) else 0, 0
    )
    row_start = np.concatenate([[0], row_end[:-1]])
    lengths = row_end - row_start
    position = np.arange(len(bits)) - np.repeat(row_start, lengths)
    weights = _weights(int(lengths.max(initial=0)))
    hashed = np.zeros(len(counts), np.uint64)
    nonempty = lengths > 0
    if nonempty.any():
        hashed[nonempty] = np.add.reduceat(bits * weights[position], row_start[nonempty])
    return hashed


def _is_vector(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_floating(t.value_type)


def _as_vector_lists(vectors: pa.Array) -> pa.Array:
    """A list<float> column as list<list<float>>: one vector per row, none where null."""
    present = vectors.is_valid().to_numpy(zero_copy_only=False)
    offsets = np.concatenate([[0], np.cumsum(present)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), vectors.drop_null())


def content_hashes(table: pa.Table | pa.RecordBatch) -> pa.Array:
    """16-hex-digit hash of each row's encoder inputs (a conformed catalog batch)."""
    columns = {name: _text_values(as_array(table.column(name))) for name in TEXT_FEATURES}
    columns[IMAGE_EMBEDDINGS] = _image_hash(as_array(table.column(IMAGE_EMBEDDINGS)))
    for field in table.schema:
        if field.name not in CONTRACT_COLUMNS and _is_vector(field.type):
            vectors = as_array(table.column(field.name))
            columns[field.name] = _image_hash(_as_vector_lists(vectors))
    hashed = pd.util.hash_pandas_object(pd.DataFrame(columns), index=False, hash_key=_KEY)
    text = hashed.to_numpy().astype(">u8").tobytes().hex().encode()
    offsets = np.arange(0, len(text) + 1, 16, dtype=np.int32)
    return pa.StringArray.from_buffers(len(hashed), pa.py_buffer(offsets), pa.py_buffer(text))
