"""A night's changes applied to one built shard (incremental refresh), without Spark.

Removed products leave the shard's id map; a label none of whose products remain is marked
deleted in the hnswlib graph (a tombstone: never returned, its slot reused by the next vector
added). Added products join the label of an identical live vector when the graph finds it as
their nearest (duplicate products share one point, as in a full build), else become new points,
in deleted slots first. The updated shard
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
        vectors = np.ascontiguousarray(added_vectors[distinct], np.float32)
        start = max(index.get_ids_list(), default=-1) + 1
        distinct_labels = np.arange(start, start + len(vectors), dtype=np.int64)
        same = np.zeros(len(vectors), bool)
        if live:  # an identical live vector is the nearest one: share its label
            index.set_ef(max(params.ef_search, 10))
            nearest = index.knn_query(vectors, k=1, num_threads=threads)[0][:, 0]
            same = (np.asarray(index.get_items(nearest), np.float32) == vectors).all(axis=1)
            distinct_labels[same] = nearest[same]
        if not same.all():
            index.add_items(
                vectors[~same], distinct_labels[~same], num_threads=threads, replace_deleted=True
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
