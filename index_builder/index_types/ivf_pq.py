"""`ivf-pq`: faiss `IndexIVFPQ` (inner product, `pq_bytes` codes of 8-bit sub-quantisers,
`.faiss`), searched with `nprobe` lists, with its float vectors for re-ranking
(index_types.faiss_shard)."""

from __future__ import annotations

import math

import numpy as np

from index_builder.index_types.faiss_shard import (
    FaissShard,
    faiss_type,
    rerank_of,
    training_sample,
)
from itemsage_core.errors import ItemSageError

# candidates re-ranked per result when a surface sets no `rerank`: measured on a 100k shard of
# the bench's vectors, recall@10's ceiling was 0.88 with 4x, 0.951 with 8x and 0.969 with 16x
# (BENCHMARKS.md)
DEFAULT_RERANK = 16


class IvfPqShard(FaissShard):
    """Searched with `nprobe`: the IVF lists a query visits."""

    SETTING_NAME = "nprobe"
    SWEEP_STEPS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)  # the report's sweep

    @property
    def setting(self) -> int:
        return self.index.nprobe

    def tune(self, value: int) -> None:
        self.index.nprobe = int(value)

    def setting_range(self) -> tuple[int, int]:
        return 1, self.index.nlist


def default_nlist(vectors: int, sample: int) -> int:
    """IVF lists: about 4 sqrt(n), as autofaiss starts from, at most sample / 39 (faiss's
    k-means wants 39 training vectors per centroid)."""
    return max(1, min(round(4 * math.sqrt(vectors)), sample // 39))


def build(vectors: np.ndarray, params, threads: int, seed: int) -> tuple[IvfPqShard, dict]:
    import faiss

    n, dim = vectors.shape
    sample, train = training_sample(vectors, params, seed)
    if dim % params.pq_bytes:
        raise ItemSageError(f"pq_bytes {params.pq_bytes} must divide the dimension {dim}")
    nlist = min(params.nlist or default_nlist(n, len(sample)), len(sample))
    bits = min(8, int(math.log2(len(sample))))  # a sub-quantiser needs 2^bits samples
    index = faiss.IndexIVFPQ(
        faiss.IndexFlatIP(dim), dim, nlist, params.pq_bytes, bits, faiss.METRIC_INNER_PRODUCT
    )
    index.cp.seed = index.pq.cp.seed = seed
    # the sample size is recorded; faiss's fewer-than-39-per-centroid warning is not needed
    index.cp.min_points_per_centroid = index.pq.cp.min_points_per_centroid = 1
    train.update(nlist=nlist, pq_bytes=params.pq_bytes, pq_bits=bits)
    rerank = rerank_of(params, DEFAULT_RERANK)
    return IvfPqShard.trained(index, sample, vectors, threads, rerank), train


IVF_PQ = faiss_type(
    IvfPqShard, "ivf-pq", build, lambda dim, params: params.pq_bytes, DEFAULT_RERANK
)
