"""Served recall: recall@10 of a loaded build as `itemsage query` serves it, the one measure the
recall gate, `verify-index`, the report and the benchmarks use.

Queries are a seeded random sample of the surface's live products, each leaving itself out, as
the neighbours table asks them; they go through the reader (`ShardedIndex.search_batch`:
k-means routing, every shard, the merge, re-ranking, deleted points, duplicate groups). Exact
search is a matrix product over every live vector of the build. A result counts when it scores
at least the exact 10th best (ties count: any of equally near products is right). The standard
error is that of the mean over the sampled queries.

Where a build falls short, `parts` says which part loses what: the share of the exact top 10
that k-means routing sends the query to, and per shard the share of its routed exact neighbours
it returns."""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from index_builder.shard_build import exact_top_k, recall_per_query, without_sources

K = 10


@dataclasses.dataclass(frozen=True)
class Sample:
    """Every live product (`ids`, `vectors`, the `shard` and `label` holding each), the rows
    sampled as queries and their exact top 10 rows (each query's own row left out)."""

    ids: np.ndarray
    vectors: np.ndarray
    shard: np.ndarray
    label: np.ndarray
    queries: np.ndarray
    exact: np.ndarray
    seed: int

    @property
    def k(self) -> int:
        return self.exact.shape[1]


@dataclasses.dataclass(frozen=True)
class Served:
    """Recall@10 as served on a sample: its mean, standard error, size and queries/s (one
    thread)."""

    recall: float
    stderr: float
    queries: int
    qps: float

    def meets(self, target: float, margin: float = 0.0) -> bool:
        """Whether the recall reaches `target` with `margin` standard errors to spare."""
        return self.recall - margin * self.stderr >= target

    def figures(self) -> dict:
        return {
            "recall_at_10": self.recall,
            "stderr": self.stderr,
            "queries": self.queries,
            "queries_per_s": self.qps,
        }

    def describe(self) -> str:
        return f"{self.recall:.3f} (+- {self.stderr:.3f}, {self.queries} queries)"


def draw(index, queries: int, seed: int = 0) -> Sample:
    """Up to `queries` of the build's live products as queries (seeded), with their exact
    top 10 over every live vector."""
    live = [s for s, ids in enumerate(index.ids) if len(ids.ids)]
    ids = np.concatenate([index.ids[s].ids for s in live])
    labels = np.concatenate([index.ids[s].labels for s in live])
    shards = np.concatenate([np.full(len(index.ids[s].ids), s) for s in live])
    vectors = np.concatenate(
        [index.indexes[s].vectors_of(index.ids[s].labels) for s in live]
    ).astype(np.float32)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(ids), size=min(queries, len(ids)), replace=False))
    k = min(K, len(ids) - 1)
    exact = without_sources(exact_top_k(vectors, vectors[rows], k + 1), rows, k)
    return Sample(ids, vectors, shards, labels, rows, exact, seed)


def search(index, drawn: Sample, repeat_s: float = 0.0):
    """The sample's queries through the reader, repeated for at least `repeat_s`: (rows found,
    queries x k, -1 past the results; their scores; queries/s)."""
    queries, exclude = drawn.vectors[drawn.queries], drawn.ids[drawn.queries].tolist()
    runs, started = 0, time.perf_counter()
    while not runs or time.perf_counter() - started < repeat_s:
        found = index.search_batch(queries, drawn.k, exclude)
        runs += 1
    seconds = max(time.perf_counter() - started, 1e-9)
    row_of = {pid: row for row, pid in enumerate(drawn.ids.tolist())}
    rows = np.array(
        [[-1 if pid is None else row_of[pid] for pid in result] for result in found.ids], np.int64
    ).reshape(len(queries), drawn.k)
    return rows, found.scores, runs * len(queries) / seconds


def served(index, drawn: Sample, repeat_s: float = 0.0) -> tuple[Served, np.ndarray]:
    """The build's served recall on the sample as it is set now, and the rows it found."""
    rows, _, qps = search(index, drawn, repeat_s)
    per_query = recall_per_query(drawn.vectors, drawn.vectors[drawn.queries], rows, drawn.exact)
    return _stats(per_query, qps), rows


def reached(index, drawn: Sample) -> np.ndarray:
    """(queries, k): whether each exact neighbour lies in a shard its query is routed to as the
    build is set now (all true without k-means). Its mean bounds the served recall."""
    routed = np.zeros((len(drawn.queries), len(index.indexes)), bool)
    for s, rows in enumerate(index._routes(drawn.vectors[drawn.queries])):
        routed[rows, s] = True
    return np.take_along_axis(routed, drawn.shard[drawn.exact], axis=1)


def ceiling(index, drawn: Sample) -> Served:
    """The served recall the routing alone allows (exact shards), with no search made."""
    per_query = reached(index, drawn).mean(axis=1) if drawn.k else np.ones(len(drawn.queries))
    return _stats(per_query, 0.0)


def _stats(per_query: np.ndarray, qps: float) -> Served:
    n = len(per_query)
    stderr = float(per_query.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
    return Served(float(per_query.mean()) if n else 1.0, stderr, n, qps)


def parts(index, drawn: Sample, found: np.ndarray) -> dict:
    """Where the exact top 10 are lost: `routing`, the share of them in the shards each query
    is routed to (None without k-means), and per shard (`shards`) the share of its routed exact
    neighbours it returned (a product of the same point counts; None where it had none)."""
    home = drawn.shard[drawn.exact]  # (q, k) the shard of each exact neighbour
    routed = reached(index, drawn)
    point = drawn.shard * (1 + int(drawn.label.max(initial=0))) + drawn.label
    got = point[np.maximum(found, 0)]
    got[found < 0] = -1
    returned = (point[drawn.exact][:, :, None] == got[:, None, :]).any(axis=2)
    shares = []
    for s in range(len(index.indexes)):
        mine = routed & (home == s)
        shares.append(float(returned[mine].mean()) if mine.any() else None)
    return {
        "routing": None if index.centroids is None else float(routed.mean()),
        "shards": shares,
    }
