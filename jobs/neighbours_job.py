"""The neighbours job (`itemsage neighbours`): a surface's current (or pinned) index build ->
for every product it serves, its top k neighbours in the build (itself left out), computed by
Spark tasks over runs of each shard's products -> one Delta table per surface
(`<out>/<surface>`, schema index_builder.neighbours.NEIGHBOURS_SCHEMA).

Each Python worker loads a build once (from any INDEX_ROOT the index job writes: local, or
through the reader's cache from an object store) and keeps it for the run's later tasks. Tasks
write their Parquet files into the table's directory; the driver checks that they hold one row
per product of the build and commits them in one transaction, tagged with the surface, build
and k: a rerun for the same build commits nothing, and a killed run leaves the previous version.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from pyspark.sql import SparkSession

from index_builder.index_reader import ShardedIndex
from index_builder.layout import build_key, current_pointer, read_build_manifest
from index_builder.neighbours import (
    NEIGHBOURS_SCHEMA,
    NeighboursConfig,
    neighbour_rows,
    shard_vectors,
)
from itemsage_core.embedding.embeddings_table import commit_files, committed_version
from itemsage_core.embedding.embeddings_table import write_data_file as write_file
from itemsage_core.errors import ItemSageError
from itemsage_core.storage.store import Store
from jobs.crash_points import crash_point
from jobs.progress import stage_progress
from jobs.spark_failures import spark_failures
from jobs.spark_session import task_slot

CHUNK = 20_000  # products per task

_LOADED: dict[tuple[str, str, str], tuple[ShardedIndex, dict]] = {}  # per Python worker


def run_id(surface: str, build_id: str, k: int) -> str:
    """The commit's tag: one commit per surface, build and k."""
    return f"neighbours-{surface}-{build_id}-k{k}"


def _build(config: NeighboursConfig, surface: str, build_id: str) -> tuple[ShardedIndex, dict]:
    key = (Store(config.index_root).uri, surface, build_id)
    if key not in _LOADED:
        _LOADED.clear()  # one build per worker at a time
        index = ShardedIndex.load(config.index_root, surface, build_id, config.cache_dir)
        _LOADED[key] = (index, {})
    return _LOADED[key]


def _task(config: NeighboursConfig, surface: str, build_id: str, out: str):
    """(shard, start, stop) -> the neighbours of those products of the shard, written as one
    file of the table; its description (JSON)."""

    def neighbours(tasks):
        threads, _, _ = task_slot()
        for shard, start, stop in tasks:
            index, shards = _build(config, surface, build_id)
            if shard not in shards:
                shards.clear()
                shards[shard] = shard_vectors(index, shard)
            ids, vectors = shards[shard]
            rows = neighbour_rows(index, ids[start:stop], vectors[start:stop], config.k, threads)
            yield json.dumps(write_file(out, rows, run_id(surface, build_id, config.k)))

    return neighbours


def write_neighbours(
    spark: SparkSession, config: NeighboursConfig, progress: Callable[[str], None] = print
) -> dict:
    """Write each surface's neighbours table; the run summary per surface (`status` written or
    unchanged, the table and its version, the build, products)."""
    store = Store(config.index_root)
    summary = {"index_root": store.uri, "k": config.k, "surfaces": {}}
    for surface in config.surfaces:
        build_id = config.build_id or current_pointer(store, surface).build_id
        if build_id is None:
            raise ItemSageError(f"{store.path(surface)} has no CURRENT build (run build-index)")
        manifest = read_build_manifest(store, build_key(surface, build_id))
        out = f"{config.out_root.rstrip('/')}/{surface}"
        tag = run_id(surface, build_id, config.k)
        result = {"table": out, "build_id": build_id, "products": manifest["products"]}
        done = committed_version(out, tag)
        if done is not None:
            progress(f"{surface}: neighbours of build {build_id} already in {out} (version {done})")
            summary["surfaces"][surface] = {**result, "status": "unchanged", "version": done}
            continue
        tasks = [
            (s, start, min(start + CHUNK, entry["count"]))
            for s, entry in enumerate(manifest["shards"])
            for start in range(0, entry["count"], CHUNK)
        ]
        progress(
            f"{surface}: top {config.k} neighbours of {manifest['products']} products of build "
            f"{build_id} in {len(tasks)} tasks"
        )
        with (
            stage_progress(spark, progress, f"itemsage neighbours: {surface}"),
            spark_failures("finding the neighbours", f"{out} is unchanged"),
        ):
            files = [
                json.loads(f)
                for f in spark.sparkContext.parallelize(tasks, len(tasks))
                .mapPartitions(_task(config, surface, build_id, out))
                .collect()
            ]
        rows = sum(f["rows"] for f in files)
        if rows != manifest["products"]:
            raise ItemSageError(
                f"{surface}: the tasks wrote {rows} rows for {manifest['products']} products; "
                f"{out} is unchanged"
            )
        crash_point("before_commit")
        metadata = {"surface": surface, "build_id": build_id, "k": config.k}
        version = commit_files(out, files, NEIGHBOURS_SCHEMA, "overwrite", tag, metadata)
        progress(f"{surface}: wrote {rows} rows to {out} (version {version})")
        summary["surfaces"][surface] = {**result, "status": "written", "version": version}
    return summary
