"""`hnsw`: an hnswlib graph over float32 vectors (`.hnsw`), about 1.1 KB per 256-d vector; the
type an incremental refresh updates in place (deleted points marked, their slots reused)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from index_builder.index_types.shard import EF_STEPS, MAX_EF, MIN_EF, IndexType


class HnswShard:
    """An hnswlib index behind the Shard calls, each one call of hnswlib's (a batch search
    stays one native call)."""

    def __init__(self, index):
        self.index = index

    @property
    def setting(self) -> int:
        return self.index.ef

    def tune(self, value: int) -> None:
        self.index.set_ef(int(value))

    def setting_range(self) -> tuple[int, int]:
        return MIN_EF, MAX_EF

    def least_setting(self, k: int) -> int:
        return k

    def search(self, queries: np.ndarray, k: int, threads: int = 1):
        return self.index.knn_query(queries, k=k, num_threads=threads)

    def vectors_of(self, labels) -> np.ndarray:
        return np.asarray(self.index.get_items(labels, return_type="numpy"))

    def count(self) -> int:
        return self.index.get_current_count()

    def save(self, paths: Mapping[str, Path]) -> None:
        self.index.save_index(str(paths["index"]))

    def add(self, vectors: np.ndarray, labels: np.ndarray, threads: int, replace_deleted=False):
        """Add points (`replace_deleted`: into deleted slots first; the index must be opened
        to allow it)."""
        self.index.add_items(vectors, labels, num_threads=threads, replace_deleted=replace_deleted)

    def mark_deleted(self, labels) -> None:
        for label in labels:
            self.index.mark_deleted(int(label))


def new_hnsw_index(dim: int, capacity: int, M: int, ef_construction: int, seed: int):
    """An empty hnswlib index (inner product) with room for `capacity` points."""
    import hnswlib

    index = hnswlib.Index(space="ip", dim=dim)
    index.init_index(
        max_elements=max(capacity, 1), M=M, ef_construction=ef_construction, random_seed=seed
    )
    return index


def opened(path: Path, dim: int, capacity: int, replace_deleted: bool = False) -> HnswShard:
    """A saved hnswlib index, with room for `capacity` points (`replace_deleted`: new points
    may take deleted slots)."""
    import hnswlib

    index = hnswlib.Index(space="ip", dim=dim)
    index.load_index(str(path), max_elements=capacity, allow_replace_deleted=replace_deleted)
    return HnswShard(index)


def build(vectors: np.ndarray, params, threads: int, seed: int) -> tuple[HnswShard, None]:
    """The graph of `vectors` (labels in row order), seeded by the surface's `seed` (the
    shard's `seed` draws nothing here)."""
    index = new_hnsw_index(
        vectors.shape[1], len(vectors), params.M, params.ef_construction, params.seed
    )
    shard = HnswShard(index)
    shard.add(vectors, np.arange(len(vectors)), threads)
    return shard, None


def load(build_dir: Path, entry: dict, dim: int) -> HnswShard:
    """A shard's index, the labels its `deleted` file lists (a refresh's) marked deleted."""
    files = entry["files"]
    shard = opened(build_dir / files["index"]["path"], dim, entry["vectors"])
    if "deleted" in files:
        shard.mark_deleted(np.load(build_dir / files["deleted"]["path"]))
    return shard


HNSW = IndexType(
    name="hnsw",
    suffix="hnsw",
    setting_name="ef_search",
    least_bytes=lambda dim, params: 4 * dim,
    build=build,
    load=load,
    sweep_steps=EF_STEPS,
    updatable=True,
)
