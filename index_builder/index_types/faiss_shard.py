"""What the faiss types (hnsw-sq8, ivf-pq) share: their float vectors kept beside the index
(`.vectors.npy`, label order), which re-rank `rerank` x k candidates by exact dot products (scores
are then exact) and answer for product vectors. The reader maps that file instead of reading it:
only the pages queries touch are resident (page cache). The quantisers are trained on a seeded
sample of the shard's vectors, drawn in the build task (the manifest records it)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from index_builder.index_types.shard import IndexType


class FaissShard:
    """A faiss index over a shard's vectors with those float vectors (an array or a memory
    map); a subclass per type says what its search setting is (`SETTING_NAME`, its
    `SWEEP_STEPS`, `setting`, `tune`, `setting_range`)."""

    SETTING_NAME: str
    SWEEP_STEPS: tuple[int, ...]

    def __init__(self, index, vectors: np.ndarray, rerank: int):
        self.index, self.vectors, self.rerank = index, vectors, rerank

    def least_setting(self, k: int) -> int:
        return 1

    def count(self) -> int:
        return int(self.index.ntotal)

    def vectors_of(self, labels) -> np.ndarray:
        return np.asarray(self.vectors[np.asarray(labels, np.int64)], np.float32)

    def search(self, queries: np.ndarray, k: int, threads: int = 1):
        """(labels, 1 - cosine) as hnswlib answers; label -1 past the points found."""
        import faiss

        faiss.omp_set_num_threads(max(1, threads))
        queries = np.ascontiguousarray(queries, np.float32).reshape(-1, self.vectors.shape[1])
        pool = k * self.rerank if self.rerank else k
        scores, labels = self.index.search(queries, min(pool, max(k, self.count())))
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
                "qpd,qd->qp", self.vectors_of(np.maximum(found, 0)), queries[rows]
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

    def save(self, paths: Mapping[str, Path]) -> None:
        import faiss

        faiss.write_index(self.index, str(paths["index"]))
        np.save(
            paths["vectors"], np.ascontiguousarray(self.vectors, np.float32), allow_pickle=False
        )

    @classmethod
    def trained(cls, index, sample, vectors, threads: int, rerank: int):
        """The untrained faiss `index` trained on `sample` and filled with `vectors`."""
        import faiss

        faiss.omp_set_num_threads(max(1, threads))
        index.train(sample)
        index.add(vectors)
        return cls(index, vectors, rerank)

    @classmethod
    def load(cls, build_dir: Path, entry: dict, dim: int):
        """A written shard, its float vectors memory-mapped."""
        import faiss

        files = entry["files"]
        index = faiss.read_index(str(build_dir / files["index"]["path"]))
        vectors = np.load(build_dir / files["vectors"]["path"], mmap_mode="r")
        return cls(index, vectors, entry.get("search", {}).get("rerank", 0))


def training_sample(vectors: np.ndarray, params, seed: int) -> tuple[np.ndarray, dict]:
    """Up to `train_sample` of the vectors drawn with `seed` (row order kept), and its record."""
    n = len(vectors)
    rng = np.random.default_rng(seed)
    sample = vectors[np.sort(rng.choice(n, size=min(n, params.train_sample), replace=False))]
    return sample, {"sample": len(sample), "seed": seed}


def faiss_type(
    shard: type[FaissShard], name: str, build: Callable, least_bytes: Callable, rerank: int
) -> IndexType:
    """A faiss type: a `.faiss` index file and the float vectors beside it, loaded as `shard`,
    re-ranking `rerank` x k candidates by default."""
    return IndexType(
        name=name,
        suffix="faiss",
        setting_name=shard.SETTING_NAME,
        least_bytes=least_bytes,
        build=build,
        load=shard.load,
        sweep_steps=shard.SWEEP_STEPS,
        roles=("index", "vectors"),
        default_rerank=rerank,
    )


def rerank_of(params, default: int) -> int:
    """The surface's `rerank`, else (none, or "auto": the served recall tunes it) the type's
    default."""
    return params.rerank if isinstance(params.rerank, int) else default
