"""Shards: indexes of one type (index_builder.index_types; hnswlib by default, inner product on
unit vectors) with their id maps, built, measured against exact search (their search setting
tuned to the gate where asked), written and loaded back.

A build task gets one planned group of products (a hash bucket or a k-means part) and cuts it
into shards of at most `max_size` products (contiguous runs of the id-sorted group), so no shard
exceeds the target size whatever the hash or the clustering did. Files of part P of group G:
`shard-GGGGG-PP.<suffix>` (its type's; one point per distinct vector) and, for the quantised
types, `shard-GGGGG-PP.vectors.npy` (float32, label order),
`shard-GGGGG-PP.ids.parquet` (`product_id`, the `label` of its vector and the
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

from index_builder.index_types.registry import AUTO, DEFAULT, candidates, is_auto, type_of
from index_builder.index_types.shard import IndexType, Shard
from index_builder.resident_memory import measured_load
from itemsage_core.errors import ItemSageError
from itemsage_core.storage.files import sha256_file

RECALL_K = 10
DEFAULT_EF = 64  # a manifest's ef_search when neither the shard nor the params give a number


def shard_files(group: int, part: int, kind: IndexType = DEFAULT) -> dict[str, str]:
    stem = f"shard-{group:05d}-{part:02d}"
    return {
        "index": f"{stem}.{kind.suffix}",
        "ids": f"{stem}.ids.parquet",
        "deleted": f"{stem}.deleted.npy",
        "vectors": f"{stem}.vectors.npy",
    }


def gate_sample(
    vectors: np.ndarray, count: int, noise: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Up to `count` rows of `vectors`, and each one moved by noise of norm ~`noise`, unit."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(vectors), size=min(count, len(vectors)), replace=False)
    picked = vectors[rows]
    moved = picked + noise * rng.standard_normal(picked.shape).astype(np.float32) / np.sqrt(
        vectors.shape[1]
    )
    return rows, (moved / np.linalg.norm(moved, axis=1, keepdims=True)).astype(np.float32)


def gate_queries(vectors: np.ndarray, count: int, noise: float, seed: int) -> np.ndarray:
    """Up to `count` of the vectors, each moved by noise of norm ~`noise`, unit."""
    return gate_sample(vectors, count, noise, seed)[1]


def without_sources(found: np.ndarray, sources: np.ndarray, k: int) -> np.ndarray:
    """Each row's first `k` of `found` other than its `sources` entry."""
    others = found != sources[:, None]
    order = np.argsort(~others, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(found, order, axis=1)


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


def recall_per_query(
    vectors: np.ndarray,
    queries: np.ndarray,
    found: np.ndarray,
    exact: np.ndarray,
    tolerance: float = 1e-6,
) -> np.ndarray:
    """Each query's share of its k results (`found` rows, -1 past the results) that score at
    least its exact k-th best (ties count: catalogs hold duplicate products, and any of equally
    near ones is a right answer; the usual ann-benchmarks definition)."""
    if not exact.size:
        return np.ones(len(queries))
    kth = np.einsum("qd,qd->q", vectors[exact[:, -1]], queries)
    scores = np.einsum("qkd,qd->qk", vectors[np.maximum(found, 0)], queries)
    scores[found < 0] = -np.inf  # fewer results than k
    return np.mean(scores >= kth[:, None] - tolerance, axis=1)


def recall_at_k(
    vectors: np.ndarray, queries: np.ndarray, found: np.ndarray, exact: np.ndarray
) -> float:
    """Mean recall@k over the queries (recall_per_query)."""
    return float(np.mean(recall_per_query(vectors, queries, found, exact))) if len(queries) else 1.0


@dataclasses.dataclass(frozen=True)
class ShardParams:
    M: int
    ef_construction: int
    ef_search: int | str  # or "auto": tuned to min_recall
    recall_queries: int
    query_noise: float
    seed: int
    index: str = DEFAULT.name  # a registered type's name, or "auto"
    max_memory_mb: float | None = None
    min_recall: float = 0.95  # what "auto" settings are tuned to
    nprobe: int | str = AUTO
    nlist: int | None = None
    pq_bytes: int = 64
    rerank: int | str | None = None  # a number, the type's default (None) or "auto"
    train_sample: int = 50_000

    @classmethod
    def of(cls, surface) -> ShardParams:
        """A surface's (index_builder.surfaces.Surface) shard parameters."""
        return cls(**{f.name: getattr(surface, f.name) for f in dataclasses.fields(cls)})


def shard_seed(params: ShardParams, group: int, part: int) -> int:
    """The seed of a shard's gate queries and quantiser sample."""
    return params.seed + 1000 * group + part


def index_sizes(files: dict, vectors: int) -> dict:
    """A shard entry's `index_bytes` and `bytes_per_vector`, from its `files`."""
    return {
        "index_bytes": files["index"]["bytes"],
        "bytes_per_vector": files["index"]["bytes"] / max(1, vectors),
    }


def index_bytes(entry: dict) -> int:
    """A shard's index file bytes (an entry of a format-1 build records only its files)."""
    return entry.get("index_bytes", entry["files"]["index"]["bytes"])


def shard_setting(entry: dict, params: dict, key: str | None = None) -> int:
    """A shard's search setting `key` (default: its type's, ef_search or nprobe) as published:
    its tuned one, else the build's (an old build's manifest has only that)."""
    key = key or type_of(entry).setting_name
    value = entry.get("search", {}).get(key, params.get(key))
    return value if isinstance(value, int) else DEFAULT_EF


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


def write_shard(
    out_dir: str | Path, group: int, part: int, shard: Shard, ids: pa.Table,
    kind: IndexType = DEFAULT,
) -> dict:  # fmt: skip
    """Write a shard's files (its type's roles) and id map into `out_dir`; their manifest
    `files`."""
    names = shard_files(group, part, kind)
    out_dir = Path(out_dir)
    shard.save({role: out_dir / names[role] for role in kind.roles})
    pq.write_table(ids, out_dir / names["ids"])
    return {role: described(out_dir, names[role]) for role in (*kind.roles, "ids")}


def shard_recall(
    shard: Shard,
    labels: np.ndarray,
    vectors: np.ndarray,
    params: ShardParams,
    group: int,
    part: int,
    threads: int = 1,
    kind: IndexType = DEFAULT,
) -> tuple[float, dict]:
    """The recall gate's measure of a shard: recall@10 of its index against exact search over
    its live points (ascending `labels`, with their `vectors`), on noisy copies of some of them
    (seeded by the shard's group and part), at its type's search setting (`ef_search` of the
    HNSW types, `nprobe` of ivf-pq) as configured, or with "auto" the smallest that reaches
    `min_recall` (binary search over the shard's `setting_range`; the largest tried when none
    does). (recall, the setting).

    Each query's own point is left out of both its results and its exact top 10: the others
    are found as a query from elsewhere finds this shard's points (every query of a hash
    surface searches every shard), not helped by a near copy of itself."""
    k = min(RECALL_K, len(vectors) - 1)
    sources, queries = gate_sample(
        vectors, params.recall_queries, params.query_noise, shard_seed(params, group, part)
    )
    exact = without_sources(exact_top_k(vectors, queries, k + 1), sources, k)
    key = kind.setting_name
    configured = getattr(params, key)
    low, high = shard.setting_range()

    def measure(value: int) -> float:
        shard.tune(value)
        found = shard.search(queries, k + 1, threads)[0].astype(np.int64)
        found = np.where(found >= 0, np.searchsorted(labels, found), -1)
        return recall_at_k(vectors, queries, without_sources(found, sources, k), exact)

    if configured != AUTO:
        value = min(configured, high)
        return measure(value), {key: value}
    recall = measure(high)
    if recall >= params.min_recall:
        while low < high:
            middle = (low + high) // 2
            middle_recall = measure(middle)
            if middle_recall >= params.min_recall:
                high, recall = middle, middle_recall
            else:
                low = middle + 1
    shard.tune(high)
    return recall, {key: high, "tuned": True}


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
    measure its recall@10 against exact search, write its files into `out_dir`; returns its
    manifest entry.

    Identical vectors (duplicate products are common in catalogs) are indexed once, under one
    label that the id map gives to each of their products: a clump of identical points would
    otherwise fill each other's neighbour lists and cut itself off from the HNSW graph.

    `index = "auto"` builds the most accurate type whose index file fits `max_memory_mb`:
    types whose codes alone exceed it are skipped unbuilt, a built one over it is discarded,
    and the smallest type is kept when none fits (the release then fails the surface)."""
    started = time.perf_counter()
    labels, rows = distinct_rows(np.ascontiguousarray(vectors, np.float32))
    vectors = np.ascontiguousarray(vectors[rows], np.float32)
    budget = None if params.max_memory_mb is None else int(params.max_memory_mb * 2**20)
    kinds = candidates(params.index)
    tried: dict[str, int] = {}
    for kind in kinds:
        least = len(vectors) * kind.least_bytes(vectors.shape[1], params)
        if budget is not None and least > budget and kind != kinds[-1]:
            tried[kind.name] = least  # at least this many bytes: not built
            continue
        entry = _built(kind, ids, labels, vectors, group, part, out_dir, params, threads,
                       content_keys)  # fmt: skip
        if budget is None or entry["index_bytes"] <= budget or kind == kinds[-1]:
            break
        tried[kind.name] = entry["index_bytes"]
        for described_file in entry["files"].values():
            (Path(out_dir) / described_file["path"]).unlink()
    if is_auto(params.index):
        entry["auto"] = {"budget_bytes": budget, "larger": tried}
    return {**entry, "build_s": time.perf_counter() - started}


def _built(
    kind: IndexType, ids, labels, vectors, group, part, out_dir, params: ShardParams, threads,
    content_keys,
) -> dict:  # fmt: skip
    """A shard of one type, built from distinct `vectors`, gated, written and loaded back to
    measure its resident bytes: its manifest entry."""
    added = time.perf_counter()
    shard, train = kind.build(vectors, params, threads, shard_seed(params, group, part))
    add_items_s = time.perf_counter() - added
    recall, search = shard_recall(
        shard, np.arange(len(vectors)), vectors, params, group, part, threads, kind
    )
    if kind.quantised:
        search["rerank"] = shard.rerank
    files = write_shard(out_dir, group, part, shard, id_map(ids, labels, content_keys), kind)
    del shard
    entry = {
        "group": group,
        "part": part,
        "count": len(ids),
        "vectors": len(vectors),
        "index": kind.name,
        "search": search,
        "files": files,
        "recall_at_10": recall,
        "add_items_s": add_items_s,
        **index_sizes(files, len(vectors)),
        **({"train": train} if train else {}),
    }
    _, entry["resident_bytes"] = measured_load(
        lambda: load_shard(out_dir, {"shard": 0, **entry}, vectors.shape[1])
    )
    return entry


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


def load_shard(build_dir: str | Path, entry: dict, dim: int) -> tuple[Shard, pa.Table]:
    """Load a shard whose files were checked against its manifest entry (build_files) through
    its type, with its search setting applied: (shard, id map table)."""
    build_dir = Path(build_dir)
    kind = type_of(entry)
    shard = kind.load(build_dir, entry, dim)
    search = entry.get("search", {})
    if kind.setting_name in search:
        shard.tune(search[kind.setting_name])
    ids = pq.read_table(build_dir / entry["files"]["ids"]["path"])
    if shard.count() != entry["vectors"] or ids.num_rows != entry["count"]:
        raise ItemSageError(
            f"shard {entry['shard']}: holds {shard.count()} vectors "
            f"and {ids.num_rows} ids, the manifest says {entry['vectors']} and "
            f"{entry['count']}"
        )
    return shard, ids
