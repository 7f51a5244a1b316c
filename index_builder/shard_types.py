"""A shard's index type (a surface's `index` key), behind the calls the reader and the gate make
of an hnswlib index (`knn_query`, `set_ef`, `get_items`, `get_current_count`):

- `hnsw`: hnswlib over float32 vectors (`.hnsw`), about 1.1 KB per 256-d vector;
- `hnsw-sq8`: faiss `IndexHNSWSQ`, the same graph over 8-bit scalar-quantised vectors (`.faiss`);
- `ivf-pq`: faiss `IndexIVFPQ` (inner product, `pq_bytes` codes of 8-bit sub-quantisers).

The quantised types keep the float vectors beside the index (`.vectors.npy`, label order), and
re-rank `rerank` x k candidates by exact dot products from them (scores are then exact). The
reader maps that file instead of reading it: it serves re-ranking and product vectors, and only
the pages queries touch are resident (page cache). Their quantisers are trained on a seeded
sample of the shard's vectors, drawn in the build task (the manifest records it).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from itemsage_core.errors import ItemSageError

MAX_EF = 1024  # the largest ef_search tuning tries
QUANTISED = ("hnsw-sq8", "ivf-pq")
# candidates re-ranked per k results when a surface sets no `rerank`: measured on a 100k shard
# of the bench's vectors, ivf-pq's recall@10 ceiling was 0.88 with 4x, 0.951 with 8x and 0.969
# with 16x (BENCHMARKS.md)
DEFAULT_RERANK = {"hnsw-sq8": 4, "ivf-pq": 16}


def index_suffix(kind: str) -> str:
    return "hnsw" if kind == "hnsw" else "faiss"


def lower_bound_bytes(kind: str, vectors: int, dim: int, pq_bytes: int) -> int:
    """Bytes the type's index needs at least for `vectors` vectors (its codes alone): the
    `auto` choice skips a type that cannot fit without building it."""
    per_vector = {"hnsw": 4 * dim, "hnsw-sq8": dim, "ivf-pq": pq_bytes}[kind]
    return vectors * per_vector


def default_nlist(vectors: int, sample: int) -> int:
    """IVF lists: about 4 sqrt(n), as autofaiss starts from, at most sample / 39 (faiss's
    k-means wants 39 training vectors per centroid)."""
    return max(1, min(round(4 * math.sqrt(vectors)), sample // 39))


class FaissShard:
    """A faiss shard (hnsw-sq8 or ivf-pq) with its float vectors (an array or a memory map)."""

    def __init__(self, index, vectors: np.ndarray, kind: str, rerank: int):
        self.index, self.vectors, self.kind, self.rerank = index, vectors, kind, rerank

    def set_ef(self, ef: int) -> None:
        if self.kind == "hnsw-sq8":
            self.index.hnsw.efSearch = int(ef)

    def set_nprobe(self, nprobe: int) -> None:
        self.index.nprobe = int(nprobe)

    def get_current_count(self) -> int:
        return int(self.index.ntotal)

    def get_items(self, labels, return_type: str = "numpy") -> np.ndarray:
        return np.asarray(self.vectors[np.asarray(labels, np.int64)], np.float32)

    def knn_query(self, queries: np.ndarray, k: int = 1, num_threads: int = 1):
        """(labels, 1 - cosine) as hnswlib answers; label -1 past the points found."""
        import faiss

        faiss.omp_set_num_threads(max(1, num_threads))
        queries = np.ascontiguousarray(queries, np.float32).reshape(-1, self.vectors.shape[1])
        pool = k * self.rerank if self.rerank else k
        scores, labels = self.index.search(queries, min(pool, max(k, self.get_current_count())))
        if labels.shape[1] > k:
            labels, scores = self._reranked(queries, labels, k)
        return labels, 1.0 - scores

    def _reranked(self, queries: np.ndarray, labels: np.ndarray, k: int):
        """The candidates `labels` ordered by exact dot products: the top k of each query."""
        out_labels = np.full((len(queries), k), -1, np.int64)
        out_scores = np.full((len(queries), k), -np.inf, np.float32)
        step = max(1, (1 << 24) // (labels.shape[1] * queries.shape[1]))  # 64 MB of floats
        for start in range(0, len(queries), step):
            rows = slice(start, start + step)
            found = labels[rows]
            exact = np.einsum(
                "qpd,qd->qp", self.get_items(np.maximum(found, 0)), queries[rows]
            ).astype(np.float32)
            exact[found < 0] = -np.inf
            top = np.argsort(-exact, axis=1, kind="stable")[:, :k]
            out_labels[rows] = np.where(
                np.isfinite(np.take_along_axis(exact, top, 1)),
                np.take_along_axis(found, top, 1),
                -1,
            )
            out_scores[rows] = np.take_along_axis(exact, top, 1)
        return out_labels, np.where(out_labels >= 0, out_scores, -1.0)


def build_quantised(
    kind: str, vectors: np.ndarray, params, threads: int, seed: int
) -> tuple[FaissShard, dict]:
    """A trained and filled faiss shard of unit `vectors` (labels 0..n-1 in row order), and
    what its training used (`sample` vectors drawn with `seed`, IVF lists, code bytes)."""
    import faiss

    faiss.omp_set_num_threads(max(1, threads))
    n, dim = vectors.shape
    rng = np.random.default_rng(seed)
    sample = vectors[np.sort(rng.choice(n, size=min(n, params.train_sample), replace=False))]
    train = {"sample": len(sample), "seed": seed}
    if kind == "hnsw-sq8":
        index = faiss.IndexHNSWSQ(
            dim, faiss.ScalarQuantizer.QT_8bit, params.M, faiss.METRIC_INNER_PRODUCT
        )
        index.hnsw.efConstruction = params.ef_construction
    else:
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
    index.train(sample)
    index.add(vectors)
    rerank = DEFAULT_RERANK[kind] if params.rerank is None else params.rerank
    return FaissShard(index, vectors, kind, rerank), train


def write_quantised(shard: FaissShard, index_path: Path, vectors_path: Path) -> None:
    import faiss

    faiss.write_index(shard.index, str(index_path))
    np.save(vectors_path, np.ascontiguousarray(shard.vectors, np.float32), allow_pickle=False)


def load_quantised(kind: str, index_path: Path, vectors_path: Path, rerank: int) -> FaissShard:
    """A written faiss shard, its float vectors memory-mapped."""
    import faiss

    index = faiss.read_index(str(index_path))
    return FaissShard(index, np.load(vectors_path, mmap_mode="r"), kind, rerank)


def _rss() -> int | None:
    """This process's resident bytes (Linux), None elsewhere."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return None


def measured_load(load: Callable[[], object]) -> tuple[object, int | None]:
    """`load()`, and the resident bytes it added to the process (freed memory is handed back
    to the system first, so the figure is what the load allocated)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = _rss()
    loaded = load()
    after = _rss()
    return loaded, None if before is None or after is None else max(0, after - before)
