"""`hnsw-sq8`: faiss `IndexHNSWSQ`, an HNSW graph over 8-bit scalar-quantised vectors (`.faiss`),
with its float vectors for re-ranking (index_types.faiss_shard)."""

from __future__ import annotations

import numpy as np

from index_builder.index_types.faiss_shard import (
    FaissShard,
    faiss_type,
    rerank_of,
    training_sample,
)
from index_builder.index_types.shard import EF_STEPS, MAX_EF, MIN_EF

# candidates re-ranked per result when a surface sets no `rerank` (BENCHMARKS.md)
DEFAULT_RERANK = 4


class HnswSq8Shard(FaissShard):
    """Searched with `ef_search`, as hnswlib's graph is."""

    SETTING_NAME = "ef_search"
    SWEEP_STEPS = EF_STEPS

    @property
    def setting(self) -> int:
        return self.index.hnsw.efSearch

    def tune(self, value: int) -> None:
        self.index.hnsw.efSearch = int(value)

    def setting_range(self) -> tuple[int, int]:
        return MIN_EF, MAX_EF

    def least_setting(self, k: int) -> int:
        return k


def build(vectors: np.ndarray, params, threads: int, seed: int) -> tuple[HnswSq8Shard, dict]:
    import faiss

    sample, train = training_sample(vectors, params, seed)
    index = faiss.IndexHNSWSQ(
        vectors.shape[1], faiss.ScalarQuantizer.QT_8bit, params.M, faiss.METRIC_INNER_PRODUCT
    )
    index.hnsw.efConstruction = params.ef_construction
    rerank = rerank_of(params, DEFAULT_RERANK)
    return HnswSq8Shard.trained(index, sample, vectors, threads, rerank), train


HNSW_SQ8 = faiss_type(HnswSq8Shard, "hnsw-sq8", build, lambda dim, params: dim, DEFAULT_RERANK)
