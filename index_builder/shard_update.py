"""A night's changes applied to one built shard (incremental refresh), without Spark.

Removed products leave the shard's id map; a label none of whose products remain is marked
deleted in the hnswlib graph (a tombstone: never returned, its slot reused by the next vector
added). Added products join the label of an identical live vector (duplicate products share one
point, as in a full build), else become new points in deleted slots first. The updated shard
then passes the same recall gate as a full build, measured on its live vectors.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from index_builder.shard_build import (
    RECALL_K,
    ShardParams,
    distinct_rows,
    exact_top_k,
    gate_queries,
    recall_at_k,
    write_shard,
)


def _keys(vectors: np.ndarray) -> list[bytes]:
    return [row.tobytes() for row in np.ascontiguousarray(vectors, np.float32)]


def update_shard(
    base_dir: str | Path,
    entry: dict,
    removed: pa.Array,
    added_ids: pa.Array,
    added_vectors: np.ndarray,
    out_dir: str | Path,
    params: ShardParams,
    dim: int,
    threads: int = 1,
) -> dict:
    """Shard `entry` of the build in `base_dir` with the products `removed` taken out and
    `added_ids` (unit `added_vectors`, rows in that order) put in, gated and written into
    `out_dir` under its group and part; its new manifest entry, with `tombstones` and the
    `changes` applied."""
    import hnswlib

    started = time.perf_counter()
    base = Path(base_dir)
    index = hnswlib.Index(space="ip", dim=dim)
    index.load_index(
        str(base / entry["files"]["index"]["path"]),
        max_elements=entry["vectors"] + len(added_ids),
        allow_replace_deleted=True,
    )
    ids = pq.read_table(base / entry["files"]["ids"]["path"])
    before = set(ids.column("label").to_numpy().tolist())
    ids = ids.filter(pc.invert(pc.is_in(ids.column("product_id"), value_set=removed)))
    live = set(ids.column("label").to_numpy().tolist())
    for label in before - live:
        index.mark_deleted(label)

    added = time.perf_counter()
    labels = np.empty(len(added_ids), np.int64)
    if len(added_ids):
        rows_label, distinct = distinct_rows(np.ascontiguousarray(added_vectors, np.float32))
        live_labels = np.array(sorted(live), np.int64)
        existing = (
            dict(zip(_keys(np.asarray(index.get_items(live_labels), np.float32)), live_labels))
            if len(live_labels)
            else {}
        )
        fresh = iter(range(max(index.get_ids_list(), default=-1) + 1, 2**62))
        keys = _keys(added_vectors[distinct])
        distinct_labels = np.array([existing.get(key, None) for key in keys], object)
        distinct_labels = np.array(
            [next(fresh) if label is None else label for label in distinct_labels], np.int64
        )
        new = ~np.isin(distinct_labels, live_labels)
        if new.any():
            index.add_items(
                np.ascontiguousarray(added_vectors[distinct][new], np.float32),
                distinct_labels[new],
                num_threads=threads,
                replace_deleted=True,
            )
        labels = distinct_labels[rows_label]
    add_items_s = time.perf_counter() - added
    ids = pa.concat_tables(
        [
            ids.select(["product_id", "label"]),
            pa.table({"product_id": added_ids.cast(pa.string()), "label": pa.array(labels)}),
        ]
    )

    live_labels = np.unique(ids.column("label").to_numpy())
    vectors = np.asarray(index.get_items(live_labels), np.float32)
    index.set_ef(params.ef_search)
    k = min(RECALL_K, len(vectors))
    queries = gate_queries(
        vectors,
        params.recall_queries,
        params.query_noise,
        params.seed + 1000 * entry["group"] + entry["part"],
    )
    found = np.searchsorted(live_labels, index.knn_query(queries, k=k, num_threads=threads)[0])
    recall = recall_at_k(vectors, queries, found, exact_top_k(vectors, queries, k))
    elements = index.get_current_count()
    return {
        "group": entry["group"],
        "part": entry["part"],
        "count": ids.num_rows,
        "vectors": elements,
        "tombstones": elements - len(live_labels),
        "files": write_shard(
            out_dir,
            entry["group"],
            entry["part"],
            index,
            ids.column("product_id").combine_chunks(),
            ids.column("label").to_numpy(),
        ),
        "recall_at_10": recall,
        "add_items_s": add_items_s,
        "build_s": time.perf_counter() - started,
        "changes": {
            "removed": entry["count"] - (ids.num_rows - len(added_ids)),
            "added": len(added_ids),
        },
    }
