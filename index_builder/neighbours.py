"""A surface build's "related products" rows, without Spark: for a run of one shard's products,
each product's top k neighbours in the whole build (itself left out), as the rows of the
neighbours table (docs/indexes.md#neighbours-table)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa

from index_builder.batch_io import NEIGHBOUR, neighbour_lists
from index_builder.hnsw_file import Points, stored_points
from index_builder.index_reader import ShardedIndex

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


def shard_vectors(index: ShardedIndex, shard: int) -> tuple[np.ndarray, np.ndarray]:
    """A loaded build's shard as (product ids, their vectors), in id-map order (by label)."""
    entry = index.manifest["shards"][shard]
    labels, vectors, _ = stored_points(
        index.directory / entry["files"]["index"]["path"], index.manifest["params"]["dim"]
    )
    return index.ids[shard].ids, Points(labels, vectors).of(index.ids[shard].labels)


def neighbour_rows(
    index: ShardedIndex, ids: np.ndarray, vectors: np.ndarray, k: int, threads: int = 1
) -> pa.Table:
    """NEIGHBOURS_SCHEMA rows of the products `ids` (with their indexed `vectors`)."""
    found = index.search_batch(vectors, k, exclude=list(ids), threads=threads)
    n = len(ids)
    return pa.table(
        {
            "product_id": pa.array(ids, pa.string()),
            "neighbours": neighbour_lists(found),
            "build_id": pa.array([index.manifest["build_id"]] * n, pa.string()),
            "table_version": pa.array([index.manifest["table"]["version"]] * n, pa.int64()),
            "k": pa.array(np.full(n, k, np.int32)),
        },
        schema=NEIGHBOURS_SCHEMA,
    )
