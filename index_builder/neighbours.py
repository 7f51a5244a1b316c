"""A surface build's "related products" rows, without Spark: for a run of one shard's products,
each product's top k neighbours in the whole build (itself, and with filters the products that
share its value in a filter column, left out), as the rows of the neighbours table
(docs/indexes.md#neighbours-table)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import pyarrow as pa

from index_builder.batch_io import NEIGHBOUR, neighbour_lists
from index_builder.batch_search import Neighbours
from index_builder.hnsw_file import Points, stored_points
from index_builder.index_reader import ShardedIndex
from index_builder.same_values import SameValues
from itemsage_core.contracts.column_mapping import ColumnMapping

NEIGHBOURS_SCHEMA = pa.schema(
    [
        pa.field("product_id", pa.string(), nullable=False),
        pa.field("neighbours", pa.list_(NEIGHBOUR), nullable=False),
        pa.field("build_id", pa.string(), nullable=False),
        pa.field("table_version", pa.int64(), nullable=False),
        pa.field("k", pa.int32(), nullable=False),
    ]
)


@dataclasses.dataclass(frozen=True)
class NeighboursConfig:
    index_root: str
    surfaces: tuple[str, ...]
    out_root: str  # one Delta table per surface under it
    k: int = 10
    build_id: str | None = None  # default: each surface's current build
    cache_dir: str | None = None  # where executors cache builds from an object store
    # per surface, the catalog columns whose values a neighbour must not share with its product
    exclude_same: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    catalog: str | None = None  # where those columns are read, through `mapping`
    mapping: ColumnMapping | None = None


MAX_FETCH = 1024  # with filters: the most results per shard searched for a product's k


def shard_vectors(index: ShardedIndex, shard: int) -> tuple[np.ndarray, np.ndarray]:
    """A loaded build's shard as (product ids, their vectors), in id-map order (by label)."""
    entry, wanted = index.manifest["shards"][shard], index.ids[shard].labels
    if "vectors" in entry["files"]:  # a quantised type's float vectors, label order
        return index.ids[shard].ids, index.indexes[shard].vectors_of(wanted)
    labels, vectors, _ = stored_points(
        index.directory / entry["files"]["index"]["path"], index.manifest["params"]["dim"]
    )
    return index.ids[shard].ids, Points(labels, vectors).of(wanted)


def neighbour_rows(
    index: ShardedIndex,
    ids: np.ndarray,
    vectors: np.ndarray,
    k: int,
    threads: int = 1,
    same: SameValues | None = None,
) -> tuple[pa.Table, int]:
    """NEIGHBOURS_SCHEMA rows of the products `ids` (with their indexed `vectors`), and how
    many have fewer than k neighbours (a build of at most k products; with `same`, products
    whose MAX_FETCH nearest all share a value with them)."""
    found = (
        index.search_batch(vectors, k, exclude=list(ids), threads=threads)
        if same is None
        else _filtered(index, np.asarray(ids, object), vectors, k, threads, same)
    )
    n = len(ids)
    rows = pa.table(
        {
            "product_id": pa.array(ids, pa.string()),
            "neighbours": neighbour_lists(found),
            "build_id": pa.array([index.manifest["build_id"]] * n, pa.string()),
            "table_version": pa.array([index.manifest["table"]["version"]] * n, pa.int64()),
            "k": pa.array(np.full(n, k, np.int32)),
        },
        schema=NEIGHBOURS_SCHEMA,
    )
    return rows, int(np.count_nonzero(np.isnan(found.scores).any(axis=1)))


def _filtered(
    index: ShardedIndex, ids: np.ndarray, vectors: np.ndarray, k: int, threads: int, same
) -> Neighbours:
    """Each product's top k less those sharing a value with it: results are fetched 4k at a
    time, then 4 times more for the products still short, up to MAX_FETCH (or the build)."""
    out = Neighbours(np.full((len(ids), k), None, object), np.full((len(ids), k), np.nan))
    pending, fetch = np.arange(len(ids)), k
    limit = max(k, min(MAX_FETCH, index.manifest["products"]))
    while len(pending):
        fetch = min(fetch * 4, limit)
        found = index.search_batch(vectors[pending], fetch, list(ids[pending]), threads)
        keep = ~np.isnan(found.scores) & ~same.shared(ids[pending], found.ids)
        rank = np.cumsum(keep, axis=1) - 1
        rows, cols = np.nonzero(keep & (rank < k))
        out.ids[pending], out.scores[pending] = None, np.nan
        out.ids[pending[rows], rank[rows, cols]] = found.ids[rows, cols]
        out.scores[pending[rows], rank[rows, cols]] = found.scores[rows, cols]
        pending = pending[(keep.sum(axis=1) < k) & (fetch < limit)]
    return out
