"""Which group (build task) each product goes to: a stable hash of its id, or its nearest
k-means centroid.

Both are pure functions of the inputs, so a rebuild of the same table version puts every
product in the same group. In k-means mode a cluster larger than the target shard size is spread
(by id hash) over several groups that share the cluster's centroid: a query routed to the cluster
visits all of their shards. Each group's rows travel to its build task packed (pack_groups):
the product ids as Arrow IPC bytes and the vectors as one float32 blob.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from itemsage_core.contracts.catalog_contract import PRODUCT_ID
from itemsage_core.storage.arrow_ipc import from_ipc, to_ipc

_KEY = "itemsage-shards!"  # 16 bytes, as pandas requires


def id_hashes(product_ids: pa.Array | list) -> np.ndarray:
    """Stable unsigned 64-bit hash of each product id (independent of row order and batch)."""
    values = pa.array(product_ids, pa.string()).to_numpy(zero_copy_only=False)
    return pd.util.hash_array(values.astype(object), hash_key=_KEY).astype(np.uint64)


def hash_groups(product_ids: pa.Array | list, groups: int) -> np.ndarray:
    """Group number (0..groups-1) of each product id."""
    return (id_hashes(product_ids) % np.uint64(groups)).astype(np.int32)


def train_centroids(sample: np.ndarray, clusters: int, seed: int) -> np.ndarray:
    """Unit-norm k-means centroids (spherical k-means, faiss) of a sample of unit vectors."""
    import faiss

    sample = np.ascontiguousarray(sample, np.float32)
    clusters = min(clusters, len(sample))
    kmeans = faiss.Kmeans(
        sample.shape[1],
        clusters,
        niter=20,
        seed=seed,
        spherical=True,
        min_points_per_centroid=1,
        max_points_per_centroid=10_000,
    )
    kmeans.train(sample)
    return kmeans.centroids.astype(np.float32)


def nearest_centroids(vectors: np.ndarray, centroids: np.ndarray, probes: int = 1) -> np.ndarray:
    """The `probes` nearest centroids (inner product) of each vector, best first: (n, probes)."""
    import faiss

    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, np.float32))
    _, found = index.search(np.ascontiguousarray(vectors, np.float32), min(probes, len(centroids)))
    return found.astype(np.int32)


@dataclasses.dataclass(frozen=True)
class ClusterPlan:
    """K-means groups: cluster c owns groups first[c] .. first[c] + parts[c] - 1 (none when the
    cluster is empty)."""

    parts: tuple[int, ...]

    @classmethod
    def from_counts(
        cls, counts: dict[int, int], clusters: int, target_shard_size: int
    ) -> ClusterPlan:
        return cls(tuple(math.ceil(counts.get(c, 0) / target_shard_size) for c in range(clusters)))

    @property
    def first(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.parts)[:-1]]).astype(np.int32)

    @property
    def groups(self) -> int:
        return int(sum(self.parts))

    def group_of(self, clusters: np.ndarray, product_ids: pa.Array | list) -> np.ndarray:
        parts = np.maximum(np.asarray(self.parts, np.uint64), 1)[clusters]
        return self.first[clusters] + (id_hashes(product_ids) % parts).astype(np.int32)

    def cluster_of_group(self) -> list[int]:
        return [c for c, n in enumerate(self.parts) for _ in range(n)]


def routing_recall(
    sample: np.ndarray, centroids: np.ndarray, probes: int, queries: int, noise: float, seed: int
) -> float:
    """Share of exact top-10 neighbours (within `sample`) that lie in the `probes` clusters a
    query is routed to: what k-means routing alone loses, whatever the shards' own recall."""
    from index_builder.shard_build import RECALL_K, exact_top_k, gate_queries

    sample = np.ascontiguousarray(sample, np.float32)
    picked = gate_queries(sample, queries, noise, seed)
    exact = exact_top_k(sample, picked, min(RECALL_K, len(sample)))
    home = nearest_centroids(sample, centroids)[:, 0][exact]  # (q, k) clusters
    routed = nearest_centroids(picked, centroids, probes)  # (q, probes)
    return float((home[:, :, None] == routed[:, None, :]).any(axis=2).mean())


def vectors_of(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A list<float> column of equal-length vectors as an (n, dim) float32 matrix."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    flat = pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(len(column), -1) if len(column) else flat.reshape(0, 0)


def pack_groups(surface: str, groups: Callable[[pa.RecordBatch], np.ndarray]):
    """A function of record batches (`product_id`, `embedding`, and `content_key` when given)
    putting each row in its group (`groups(batch)`): one row (surface, group, products, vectors)
    per group present in a batch, so a shuffle moves a few large values instead of a row per
    product (`products`: the rows' ids and content keys as an Arrow IPC table)."""

    def pack(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            assigned = np.asarray(groups(batch))
            vectors = vectors_of(batch.column("embedding"))
            present = np.unique(assigned)
            chosen = [np.flatnonzero(assigned == g) for g in present]
            kept = [c for c in (PRODUCT_ID, "content_key") if c in batch.schema.names]
            products = pa.Table.from_batches([batch]).select(kept)
            yield pa.RecordBatch.from_pydict(
                {
                    "surface": pa.array([surface] * len(present), pa.string()),
                    "group": pa.array(present, pa.int32()),
                    "products": pa.array(
                        [to_ipc(products.take(pa.array(rows))) for rows in chosen],
                        pa.binary(),
                    ),
                    "vectors": pa.array(
                        [
                            np.ascontiguousarray(vectors[rows], np.float32).tobytes()
                            for rows in chosen
                        ],
                        pa.binary(),
                    ),
                }
            )

    return pack


def unpack_group(packed: list[tuple[bytes, bytes]], dim: int) -> tuple[pa.Table, np.ndarray]:
    """A group's products table and (n, dim) vectors from its packed (products, vectors) parts."""
    products = pa.concat_tables([from_ipc(p) for p, _ in packed]).combine_chunks()
    vectors = np.frombuffer(b"".join(v for _, v in packed), np.float32)
    return products, vectors.reshape(products.num_rows, dim)
