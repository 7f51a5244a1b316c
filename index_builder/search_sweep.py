"""How a loaded build answers, measured: recall@10 against exact search and queries/s as its
search setting varies, and the scores its products' neighbours get (what `itemsage report` plots).

Queries are a seeded sample of the surface's own products, each leaving itself out, as the
neighbours table asks them. Exact search is a matrix product over every served product's vector.
A result counts when it scores at least the exact 10th best (ties count, as in the recall gate's
`recall_at_k`). The setting swept is ef_search, or nprobe when every shard is ivf-pq (other
shards then keep their own)."""

from __future__ import annotations

import contextlib
import dataclasses
import time

import numpy as np

from index_builder.shard_build import exact_top_k, recall_at_k, shard_ef, without_sources
from index_builder.shard_types import MAX_EF

K = 10
EF_STEPS = (10, 16, 24, 32, 48, 64, 96, 128, 256, 512, MAX_EF)
NPROBE_STEPS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
MIN_TIMED_S = 0.2  # each setting's queries are repeated for at least this long


@dataclasses.dataclass(frozen=True)
class Sample:
    """Every served product (`ids`, `vectors`), the rows sampled as queries and their exact
    top 10 rows (each query's own row left out)."""

    ids: np.ndarray
    vectors: np.ndarray
    queries: np.ndarray
    exact: np.ndarray


@dataclasses.dataclass(frozen=True)
class Point:
    setting: int | None  # None: each shard's published setting
    recall: float
    qps: float


def swept_key(manifest: dict) -> str:
    """The setting a build's sweep varies: nprobe when every shard is ivf-pq, else ef_search."""
    kinds = {entry.get("index", "hnsw") for entry in manifest["shards"]}
    return "nprobe" if kinds == {"ivf-pq"} else "ef_search"


def published_settings(manifest: dict) -> list[int]:
    """Each shard's swept setting as published (a build's ef_search where a shard has none)."""
    key = swept_key(manifest)
    if key == "ef_search":
        return [shard_ef(entry, manifest["params"]) for entry in manifest["shards"]]
    return [entry["search"]["nprobe"] for entry in manifest["shards"]]


def steps(manifest: dict) -> list[int]:
    """The settings swept: ef_search from 10 to MAX_EF, or nprobe up to the fewest lists."""
    if swept_key(manifest) == "ef_search":
        return list(EF_STEPS)
    lists = min(entry["train"]["nlist"] for entry in manifest["shards"])
    return sorted({min(n, lists) for n in NPROBE_STEPS})


def sample(index, queries: int, seed: int = 0) -> Sample:
    """Up to `queries` of the build's products as queries, with their exact top 10."""
    live = [s for s, ids in enumerate(index.ids) if len(ids.ids)]
    ids = np.concatenate([index.ids[s].ids for s in live])
    vectors = np.concatenate(
        [
            np.asarray(index.indexes[s].get_items(index.ids[s].labels, return_type="numpy"))
            for s in live
        ]
    ).astype(np.float32)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(ids), size=min(queries, len(ids)), replace=False))
    k = min(K, len(ids) - 1)
    exact = without_sources(exact_top_k(vectors, vectors[rows], k + 1), rows, k)
    return Sample(ids, vectors, rows, exact)


@contextlib.contextmanager
def searched_with(index, key: str, value: int):
    """The loaded build searched with `key` = `value` on every shard, its own settings after."""
    saved = index.manifest
    index.manifest = {
        **saved,
        "shards": [{**e, "search": {**e.get("search", {}), key: value}} for e in saved["shards"]],
    }
    if key == "nprobe":
        for shard in index.indexes:
            shard.set_nprobe(value)
    try:
        yield
    finally:
        index.manifest = saved
        if key == "nprobe":
            for shard, setting in zip(index.indexes, published_settings(saved)):
                shard.set_nprobe(setting)


def measure(index, drawn: Sample):
    """(recall@10, queries/s, scores of each query's results) of the build as it is set now,
    on one thread."""
    queries, exclude = drawn.vectors[drawn.queries], drawn.ids[drawn.queries].tolist()
    k = drawn.exact.shape[1]
    runs, started = 0, time.perf_counter()
    while not runs or time.perf_counter() - started < MIN_TIMED_S:
        found = index.search_batch(queries, k, exclude)
        runs += 1
    seconds = time.perf_counter() - started
    row_of = {pid: row for row, pid in enumerate(drawn.ids.tolist())}
    rows = np.array(
        [[-1 if pid is None else row_of[pid] for pid in result] for result in found.ids], np.int64
    ).reshape(len(queries), k)
    recall = recall_at_k(drawn.vectors, queries, rows, drawn.exact)
    return recall, runs * len(queries) / seconds, found.scores


def sweep(index, drawn: Sample) -> tuple[list[Point], Point, np.ndarray]:
    """Each swept setting's point, the published settings' point, and the published settings'
    result scores (queries x 10, NaN past the results found)."""
    key = swept_key(index.manifest)
    measure(index, drawn)  # warm-up: first touches of the graphs and vectors
    points = []
    for value in steps(index.manifest):
        with searched_with(index, key, value):
            recall, qps, _ = measure(index, drawn)
        points.append(Point(value, recall, qps))
    recall, qps, scores = measure(index, drawn)
    return points, Point(None, recall, qps), scores
