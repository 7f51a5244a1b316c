"""How a loaded build answers, measured: recall@10 against exact search and queries/s as its
search setting varies, and the scores its products' neighbours get (what `itemsage report` plots).

Queries are a seeded sample of the surface's own products, each leaving itself out, as the
neighbours table asks them. Exact search is a matrix product over every served product's vector.
A result counts when it scores at least the exact 10th best (ties count, as in the recall gate's
`recall_at_k`). The setting swept is the shards' types' (index_types), ef_search where they
differ (shards searched with another setting then keep their own)."""

from __future__ import annotations

import contextlib
import dataclasses
import time

import numpy as np

from index_builder.index_types.registry import DEFAULT, type_of
from index_builder.shard_build import exact_top_k, recall_at_k, shard_setting, without_sources

K = 10
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
    """The setting a build's sweep varies: its shards' types' (nprobe when every shard is
    ivf-pq), else the default type's (ef_search)."""
    keys = {type_of(entry).setting_name for entry in manifest["shards"]}
    return keys.pop() if len(keys) == 1 else DEFAULT.setting_name


def published_settings(manifest: dict) -> list[int]:
    """Each shard's swept setting as published (a build's where a shard has none)."""
    key = swept_key(manifest)
    return [shard_setting(entry, manifest["params"], key) for entry in manifest["shards"]]


def steps(index) -> list[int]:
    """The settings swept: the swept types' sweep steps, up to the most any swept shard
    takes (ef_search from 10 to MAX_EF; nprobe up to the fewest lists)."""
    key = swept_key(index.manifest)
    swept = [
        (type_of(entry), shard)
        for entry, shard in zip(index.manifest["shards"], index.indexes)
        if type_of(entry).setting_name == key
    ]
    most = min(shard.setting_range()[1] for _, shard in swept)
    return sorted({min(n, most) for kind, _ in swept for n in kind.sweep_steps})


def sample(index, queries: int, seed: int = 0) -> Sample:
    """Up to `queries` of the build's products as queries, with their exact top 10."""
    live = [s for s, ids in enumerate(index.ids) if len(ids.ids)]
    ids = np.concatenate([index.ids[s].ids for s in live])
    vectors = np.concatenate(
        [index.indexes[s].vectors_of(index.ids[s].labels) for s in live]
    ).astype(np.float32)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(ids), size=min(queries, len(ids)), replace=False))
    k = min(K, len(ids) - 1)
    exact = without_sources(exact_top_k(vectors, vectors[rows], k + 1), rows, k)
    return Sample(ids, vectors, rows, exact)


@contextlib.contextmanager
def searched_with(index, key: str, value: int):
    """The loaded build searched with `key` = `value` on every shard searched with that
    setting (the reader applies each shard's published one per search), its own after."""
    saved = index.manifest
    index.manifest = {
        **saved,
        "shards": [{**e, "search": {**e.get("search", {}), key: value}} for e in saved["shards"]],
    }
    try:
        yield
    finally:
        index.manifest = saved


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
    for value in steps(index):
        with searched_with(index, key, value):
            recall, qps, _ = measure(index, drawn)
        points.append(Point(value, recall, qps))
    recall, qps, scores = measure(index, drawn)
    return points, Point(None, recall, qps), scores
