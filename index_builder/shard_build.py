"""Shards: hnswlib indexes (inner product on unit vectors) with their id maps, built, measured
against exact search, written and loaded back.

A build task gets one planned group of products (a hash bucket or a k-means part) and cuts it
into shards of at most `max_size` products (contiguous runs of the id-sorted group), so no shard
exceeds the target size whatever the hash or the clustering did. Files of part P of group G:
`shard-GGGGG-PP.hnsw` (hnswlib's format; one point per distinct vector),
`shard-GGGGG-PP.ids.parquet` (`product_id`, the hnswlib `label` of its vector and the
`content_key` of its row, which an incremental refresh compares), and after a refresh that only
removed products, `shard-GGGGG-PP.deleted.npy` (labels deleted since the index file was written).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from itemsage_core.errors import ItemSageError
from itemsage_core.storage.files import sha256_file

RECALL_K = 10


def shard_files(group: int, part: int) -> dict[str, str]:
    stem = f"shard-{group:05d}-{part:02d}"
    return {"index": f"{stem}.hnsw", "ids": f"{stem}.ids.parquet", "deleted": f"{stem}.deleted.npy"}


def new_hnsw_index(dim: int, capacity: int, M: int, ef_construction: int, seed: int):
    import hnswlib

    index = hnswlib.Index(space="ip", dim=dim)
    index.init_index(
        max_elements=max(capacity, 1), M=M, ef_construction=ef_construction, random_seed=seed
    )
    return index


def gate_queries(vectors: np.ndarray, count: int, noise: float, seed: int) -> np.ndarray:
    """Up to `count` of the shard's own vectors, each moved by noise of norm ~`noise`, unit."""
    rng = np.random.default_rng(seed)
    picked = vectors[rng.choice(len(vectors), size=min(count, len(vectors)), replace=False)]
    moved = picked + noise * rng.standard_normal(picked.shape).astype(np.float32) / np.sqrt(
        vectors.shape[1]
    )
    return (moved / np.linalg.norm(moved, axis=1, keepdims=True)).astype(np.float32)


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact inner-product top-k rows of `vectors` for each query, best first (a matrix product
    per block of queries; a few times faster than faiss's flat index here, no copy of the
    vectors)."""
    found = np.empty((len(queries), k), np.int64)
    for start in range(0, len(queries), 64):
        scores = queries[start : start + 64] @ vectors.T
        top = np.argpartition(scores, -k, axis=1)[:, -k:]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        found[start : start + 64] = np.take_along_axis(top, order, axis=1)
    return found


def recall_at_k(
    vectors: np.ndarray,
    queries: np.ndarray,
    found: np.ndarray,
    exact: np.ndarray,
    tolerance: float = 1e-6,
) -> float:
    """Mean share of each query's k results that score at least its exact k-th best (ties
    count: catalogs hold duplicate products, and any of equally near ones is a right answer;
    the usual ann-benchmarks definition)."""
    if not exact.size:
        return 1.0
    kth = np.einsum("qd,qd->q", vectors[exact[:, -1]], queries)
    scores = np.einsum("qkd,qd->qk", vectors[found], queries)
    return float(np.mean(scores >= kth[:, None] - tolerance))


@dataclasses.dataclass(frozen=True)
class ShardParams:
    M: int
    ef_construction: int
    ef_search: int
    recall_queries: int
    query_noise: float
    seed: int

    @classmethod
    def of(cls, surface) -> ShardParams:
        """A surface's (index_builder.surfaces.Surface) shard parameters."""
        s = surface
        return cls(s.M, s.ef_construction, s.ef_search, s.recall_queries, s.query_noise, s.seed)


def distinct_rows(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(label of each row, row index of each label): rows with identical vectors share a label,
    labels numbered in order of first appearance."""
    keys = (
        np.ascontiguousarray(vectors)
        .view(np.dtype((np.void, vectors.dtype.itemsize * vectors.shape[1])))
        .ravel()
    )
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[inverse.ravel()], first[order]


def id_map(ids: pa.Array, labels: np.ndarray, content_keys: np.ndarray | None) -> pa.Table:
    """A shard's id map: `product_id`, `label` and (where known) `content_key` per product."""
    columns = {"product_id": ids, "label": pa.array(labels, pa.int64())}
    if content_keys is not None:
        columns["content_key"] = pa.array(content_keys, pa.int64())
    return pa.table(columns)


def described(out_dir: str | Path, name: str) -> dict:
    """A written file's manifest description (path, bytes, sha256), which load_shard checks."""
    path = Path(out_dir) / name
    return {"path": name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def write_shard(out_dir: str | Path, group: int, part: int, index, ids: pa.Table) -> dict:
    """Write a shard's hnswlib index and id map into `out_dir`; their manifest `files`."""
    names = shard_files(group, part)
    index.save_index(str(Path(out_dir) / names["index"]))
    pq.write_table(ids, Path(out_dir) / names["ids"])
    return {role: described(out_dir, names[role]) for role in ("index", "ids")}


def shard_recall(
    index,
    labels: np.ndarray,
    vectors: np.ndarray,
    params: ShardParams,
    group: int,
    part: int,
    threads: int = 1,
) -> float:
    """The recall gate's measure of a shard: recall@10 of its index (at its ef_search) against
    exact search over its live points (ascending `labels`, with their `vectors`), on noisy
    copies of some of them (seeded by the shard's group and part)."""
    index.set_ef(params.ef_search)
    k = min(RECALL_K, len(vectors))
    queries = gate_queries(
        vectors, params.recall_queries, params.query_noise, params.seed + 1000 * group + part
    )
    found = np.searchsorted(labels, index.knn_query(queries, k=k, num_threads=threads)[0])
    return recall_at_k(vectors, queries, found, exact_top_k(vectors, queries, k))


def build_shard(
    ids: pa.Array,
    vectors: np.ndarray,
    group: int,
    part: int,
    out_dir: str | Path,
    params: ShardParams,
    threads: int = 1,
    content_keys: np.ndarray | None = None,
) -> dict:
    """Build one shard of unit `vectors` (rows in `ids` order, with their `content_keys`),
    measure its recall@10 against exact search, write its two files into `out_dir`; returns its
    manifest entry.

    Identical vectors (duplicate products are common in catalogs) are indexed once, under one
    label that the id map gives to each of their products: a clump of identical points would
    otherwise fill each other's neighbour lists and cut itself off from the HNSW graph."""
    started = time.perf_counter()
    labels, rows = distinct_rows(np.ascontiguousarray(vectors, np.float32))
    vectors = np.ascontiguousarray(vectors[rows], np.float32)
    index = new_hnsw_index(
        vectors.shape[1], len(vectors), params.M, params.ef_construction, params.seed
    )
    added = time.perf_counter()
    index.add_items(vectors, np.arange(len(vectors)), num_threads=threads)
    add_items_s = time.perf_counter() - added
    recall = shard_recall(index, np.arange(len(vectors)), vectors, params, group, part, threads)

    return {
        "group": group,
        "part": part,
        "count": len(ids),
        "vectors": len(vectors),
        "files": write_shard(out_dir, group, part, index, id_map(ids, labels, content_keys)),
        "recall_at_10": recall,
        "add_items_s": add_items_s,
        "build_s": time.perf_counter() - started,
    }


def build_group_shards(
    product_ids: pa.Array,
    vectors: np.ndarray,
    group: int,
    max_size: int,
    out_dir: str | Path,
    params: ShardParams,
    threads: int = 1,
    content_keys: np.ndarray | None = None,
) -> list[dict]:
    """Build the shards of one group: rows sorted by product id (so the result does not depend
    on input order, and with one thread the files are byte-identical between builds), then cut
    into ceil(n / max_size) near-equal contiguous runs."""
    order = np.argsort(
        np.asarray(product_ids.to_numpy(zero_copy_only=False), dtype=object), kind="stable"
    )
    parts = max(1, -(-len(order) // max_size))
    return [
        build_shard(
            product_ids.take(pa.array(rows)),
            vectors[rows],
            group,
            part,
            out_dir,
            params,
            threads,
            None if content_keys is None else content_keys[rows],
        )
        for part, rows in enumerate(np.array_split(order, parts))
    ]


def load_shard(build_dir: str | Path, entry: dict, dim: int):
    """Load a shard whose files were checked against its manifest entry (build_files), with the
    labels its `deleted` file lists marked deleted: (index, id map table)."""
    import hnswlib

    index = hnswlib.Index(space="ip", dim=dim)
    index.load_index(
        str(Path(build_dir) / entry["files"]["index"]["path"]), max_elements=entry["vectors"]
    )
    if "deleted" in entry["files"]:
        for label in np.load(Path(build_dir) / entry["files"]["deleted"]["path"]):
            index.mark_deleted(int(label))
    ids = pq.read_table(Path(build_dir) / entry["files"]["ids"]["path"])
    if index.get_current_count() != entry["vectors"] or ids.num_rows != entry["count"]:
        raise ItemSageError(
            f"shard {entry['shard']}: holds {index.get_current_count()} vectors "
            f"and {ids.num_rows} ids, the manifest says {entry['vectors']} and "
            f"{entry['count']}"
        )
    return index, ids
