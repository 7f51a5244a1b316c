"""The points of a saved hnswlib index read straight from its file (hnswlib's `get_items` copies
them one by one through Python lists, ~20 us per 256-d vector: seconds per shard).

hnswlib (0.7, 0.8) saves a 96-byte header (offsetLevel0, max_elements, cur_element_count,
size_data_per_element, label_offset, offsetData as size_t, ...) and then one fixed-size record
per point: its level-0 links (whose third byte holds the deleted mark), its vector at offsetData
and its label (size_t) at label_offset. The header is checked against the dimension, so a file
of another layout is an error, never misread.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from itemsage_core.errors import ItemSageError

HEADER_BYTES = 96
DELETED_MARK = 1  # hnswlib's DELETE_MARK, in byte 2 of a point's level-0 link list


def stored_points(path: str | Path, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels int64, vectors float32 (n, dim), deleted bool) of every point in the file, in
    its internal order."""
    path = Path(path)
    with open(path, "rb") as file:
        header = np.frombuffer(file.read(48), np.uint64)
    if len(header) < 6:
        raise ItemSageError(f"{path}: not an hnswlib index (header too short)")
    level0, _, count, size, label_at, data_at = (int(x) for x in header)
    if (
        level0 != 0
        or data_at + 4 * dim > label_at
        or label_at + 8 != size
        or path.stat().st_size < HEADER_BYTES + count * size
    ):
        raise ItemSageError(f"{path}: not an hnswlib index of {dim}-d float vectors")
    records = np.memmap(path, np.uint8, "r", HEADER_BYTES, (count, size))
    vectors = np.ascontiguousarray(records[:, data_at : data_at + 4 * dim]).view(np.float32)
    labels = np.ascontiguousarray(records[:, label_at:size]).view(np.uint64).ravel()
    deleted = (records[:, 2] & DELETED_MARK).astype(bool)
    return labels.astype(np.int64), vectors, deleted


class Points:
    """A shard's points by label: a file's (stored_points), then any added to it."""

    def __init__(self, labels: np.ndarray, vectors: np.ndarray):
        self.labels, self.vectors = labels, vectors
        self._order = np.argsort(labels, kind="stable")

    def add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        self.labels = np.concatenate([self.labels, labels])
        self.vectors = np.concatenate([self.vectors, vectors])
        self._order = np.argsort(self.labels, kind="stable")

    def of(self, labels: np.ndarray) -> np.ndarray:
        """The vectors of `labels` (each one a known point's)."""
        return self.vectors[self._order[np.searchsorted(self.labels[self._order], labels)]]
