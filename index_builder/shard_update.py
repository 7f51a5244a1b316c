"""A night's changes applied to one built shard (incremental refresh), without Spark.

Removed products leave the shard's id map; a label none of whose products remain is deleted
from the graph (a tombstone: never returned, its slot reused by the next vector added).
A shard that only loses products keeps its index file as it is (the refreshed build carries it
over) and lists the labels deleted since that file was written in its `deleted` file, which
load_shard applies. A shard that gains products is rewritten: added products join the label of
an identical live vector (found by its bytes: duplicate products share one
point, as in a full build), else become new points, in deleted slots first. Either way the
updated shard passes the same recall gate as a full build, measured on its live vectors.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from index_builder.hnsw_file import Points, stored_points
from index_builder.index_types.hnsw import HNSW, HnswShard, opened
from index_builder.resident_memory import measured_load
from index_builder.shard_build import (
    ShardParams,
    described,
    distinct_rows,
    index_sizes,
    load_shard,
    shard_files,
    shard_recall,
    write_shard,
)


def update_shard(
    base_dir: str | Path,
    entry: dict,
    removed: pa.Array,
    added: pa.Table,
    added_vectors: np.ndarray,
    out_dir: str | Path,
    params: ShardParams,
    dim: int,
    threads: int = 1,
) -> dict:
    """Shard `entry` of the build in `base_dir` with the products `removed` taken out and the
    `added` ones (`product_id`, `content_key`; unit `added_vectors`, rows in that order) put in,
    gated, its new files written into `out_dir`; its new manifest entry, with `tombstones` and
    the `changes` applied. When nothing was added, its `files` keep the base's index file (for
    the caller to carry over) beside a new id map and `deleted` file. Only an updatable type's
    shards (hnsw) come here."""
    started = time.perf_counter()
    base, files = Path(base_dir), entry["files"]
    index = opened(
        base / files["index"]["path"], dim, entry["vectors"] + added.num_rows, replace_deleted=True
    )
    points = Points(*stored_points(base / files["index"]["path"], dim)[:2])
    deleted = np.load(base / files["deleted"]["path"]) if "deleted" in files else np.empty(0, int)
    index.mark_deleted(deleted)
    ids = pq.read_table(base / files["ids"]["path"])
    before = np.unique(ids.column("label").to_numpy())
    ids = ids.filter(pc.invert(pc.is_in(ids.column("product_id"), value_set=removed)))
    gone = np.setdiff1d(before, ids.column("label").to_numpy())
    index.mark_deleted(gone)

    add_started = time.perf_counter()
    if added.num_rows:
        live = np.unique(ids.column("label").to_numpy())
        labels = _add(index, points, added_vectors, live, threads)
        new = {"product_id": added.column("product_id"), "label": labels}
        new["content_key"] = added.column("content_key")
        ids = pa.concat_tables([ids.select(list(new)), pa.table(new)])
    add_items_s = time.perf_counter() - add_started
    live = np.unique(ids.column("label").to_numpy())
    recall, search = shard_recall(
        index, live, points.of(live), params, entry["group"], entry["part"], threads
    )
    if added.num_rows:
        new_files = write_shard(out_dir, entry["group"], entry["part"], index, ids)
    else:
        names = shard_files(entry["group"], entry["part"])
        pq.write_table(ids, Path(out_dir) / names["ids"])
        np.save(Path(out_dir) / names["deleted"], np.union1d(deleted, gone), allow_pickle=False)
        new_files = {
            "index": files["index"],
            **{role: described(out_dir, names[role]) for role in ("ids", "deleted")},
        }
    elements = index.count()
    del index
    updated = {
        "group": entry["group"],
        "part": entry["part"],
        "count": ids.num_rows,
        "vectors": elements,
        "index": HNSW.name,
        "search": search,
        "tombstones": elements - len(live),
        "files": new_files,
        **index_sizes(new_files, elements),
        "recall_at_10": recall,
        "add_items_s": add_items_s,
        "build_s": time.perf_counter() - started,
        "changes": {
            "removed": entry["count"] - (ids.num_rows - added.num_rows),
            "added": added.num_rows,
        },
    }
    resident = entry.get("resident_bytes")
    if added.num_rows:  # a new index file: measured as loaded
        _, resident = measured_load(lambda: load_shard(out_dir, {"shard": 0, **updated}, dim))
    return {**updated, "resident_bytes": resident}


def _add(index: HnswShard, points: Points, vectors: np.ndarray, live: np.ndarray, threads: int):
    """Labels of the added rows: a `live` point's whose vector is identical (duplicate products
    share one point, as in a full build), else a new point's (deleted slots first)."""
    rows_label, distinct = distinct_rows(np.ascontiguousarray(vectors, np.float32))
    vectors = np.ascontiguousarray(vectors[distinct], np.float32)
    start = int(points.labels.max(initial=-1)) + 1
    labels = np.arange(start, start + len(vectors), dtype=np.int64)
    known = {v.tobytes(): label for label, v in zip(live.tolist(), points.of(live))}
    twins = np.array([known.get(v.tobytes(), -1) for v in vectors], np.int64)
    same = twins >= 0
    labels[same] = twins[same]
    if not same.all():
        index.add(vectors[~same], labels[~same], threads, replace_deleted=True)
        points.add(labels[~same], vectors[~same])
    return pa.array(labels[rows_label])
