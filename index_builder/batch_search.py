"""Searching a build's shards for a batch of queries: each shard answers every query routed to
it in one native call (`Shard.search`: hnswlib or faiss, `num_threads`), its labels are
expanded to their products (duplicate products share a label) and the shards' results are
merged per query with NumPy; no Python loop runs per result."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Hits:
    """Results of one or more shards as flat arrays: the query (row) each belongs to, its cosine
    score and its product id."""

    queries: np.ndarray  # int64
    scores: np.ndarray  # float64
    products: np.ndarray  # object (str)

    @classmethod
    def concat(cls, hits: Sequence[Hits]) -> Hits:
        if not hits:
            return cls(np.empty(0, np.int64), np.empty(0), np.empty(0, object))
        return cls(*(np.concatenate([getattr(h, f) for h in hits]) for f in cls.__annotations__))


@dataclasses.dataclass(frozen=True)
class Neighbours:
    """The top k of each query of a batch, best first: `ids` (None past the results found) and
    `scores` (NaN there)."""

    ids: np.ndarray  # (queries, k) object
    scores: np.ndarray  # (queries, k) float64

    def row(self, i: int) -> list[tuple[str, float]]:
        """Query i's results as (product_id, cosine) pairs."""
        return [(p, float(s)) for p, s in zip(self.ids[i], self.scores[i]) if p is not None]


def shard_hits(
    shard, ids, starts: np.ndarray, queries: np.ndarray, rows: np.ndarray, k: int, threads: int
) -> Hits:
    """One shard's (index_types.Shard) top `k` points for the `queries` (rows `rows` of the
    batch), each point's label expanded to its products (`ids[starts[l]:starts[l + 1]]`)."""
    labels, distances = shard.search(queries, k, threads)
    labels = labels.astype(np.int64)
    found = labels.ravel() >= 0  # a quantised index may find fewer than k
    labels = labels.ravel()[found]
    counts = starts[labels + 1] - starts[labels]
    first = np.cumsum(counts) - counts  # each label's first row in the expanded arrays
    offsets = np.arange(counts.sum()) - np.repeat(first, counts)
    return Hits(
        np.repeat(np.repeat(rows, k)[found], counts),
        np.repeat(1.0 - distances.ravel()[found].astype(np.float64), counts),
        ids[np.repeat(starts[labels], counts) + offsets],
    )


def top_k(hits: Hits, queries: int, k: int, exclude: Sequence[str | None] | None) -> Neighbours:
    """Each query's best `k` hits, by score then product id, less its `exclude`d id."""
    if exclude is not None:
        keep = hits.products != np.asarray(list(exclude), object)[hits.queries]
        hits = Hits(hits.queries[keep], hits.scores[keep], hits.products[keep])
    order = np.lexsort((-hits.scores, hits.queries))
    rows, scores = hits.queries[order], hits.scores[order]
    tied = np.flatnonzero((rows[1:] == rows[:-1]) & (scores[1:] == scores[:-1]))
    if len(tied):  # equal scores (duplicate products): ordered by product id, as one query is
        members = order[np.union1d(tied, tied + 1)]
        by_id = np.zeros(len(order), np.int64)
        by_id[members] = np.unique(hits.products[members].astype(str), return_inverse=True)[1]
        order = np.lexsort((by_id, -hits.scores, hits.queries))
        rows = hits.queries[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows)
    taken = rank < k
    ids = np.full((queries, k), None, object)
    scores = np.full((queries, k), np.nan)
    ids[rows[taken], rank[taken]] = hits.products[order][taken]
    scores[rows[taken], rank[taken]] = hits.scores[order][taken]
    return Neighbours(ids, scores)
