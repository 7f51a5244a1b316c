"""The neighbours job (`itemsage neighbours`): a surface's current (or pinned) index build ->
for every product it serves, its top k neighbours in the build (itself left out), computed by
Spark tasks over runs of each shard's products -> one Delta table per surface
(`<out>/<surface>`, schema index_builder.neighbours.NEIGHBOURS_SCHEMA).

Each Python worker loads a build once (from any INDEX_ROOT the index job writes: local, or
through the reader's cache from an object store) and keeps it for the run's later tasks. With a
surface's `neighbours_exclude_same` columns, the driver has Spark read those catalog columns of
the build's products as 64-bit keys (index_builder.same_values) and broadcasts them. Tasks
write their Parquet files into the table's directory; the driver checks that they hold one row
per product of the build and commits them in one transaction, tagged with the surface, build
and k: a rerun for the same build commits nothing, and a killed run leaves the previous version.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable

import pyarrow as pa
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from index_builder.index_reader import ShardedIndex
from index_builder.layout import build_key, current_pointer, read_build_manifest
from index_builder.neighbours import (
    NEIGHBOURS_SCHEMA,
    NeighboursConfig,
    neighbour_rows,
    shard_vectors,
)
from index_builder.same_values import SameValues
from itemsage_core.contracts.catalog_contract import PRODUCT_ID
from itemsage_core.embedding.embeddings_table import commit_files, committed_version
from itemsage_core.embedding.embeddings_table import write_data_file as write_file
from itemsage_core.errors import ItemSageError, no_column
from itemsage_core.storage.store import Store
from itemsage_core.storage.uris import absolute_uri
from jobs.catalog_frame import read_catalog, without_repeated_ids
from jobs.crash_points import crash_point
from jobs.progress import stage_progress
from jobs.refresh_indexes import base_ids
from jobs.spark_failures import spark_failures
from jobs.spark_session import task_slot

CHUNK = 20_000  # products per task

# per Python worker: the loaded build, its shards' vectors, the run's filter keys
_LOADED: dict[str, tuple[ShardedIndex, dict, dict]] = {}


def run_id(surface: str, build_id: str, k: int, exclude_same: tuple[str, ...] = ()) -> str:
    """The commit's tag: one commit per surface, build, k and filter columns."""
    filters = f"-exclude-same-{','.join(exclude_same)}" if exclude_same else ""
    return f"neighbours-{surface}-{build_id}-k{k}{filters}"


def _build(config: NeighboursConfig, surface: str, build_id: str, same) -> tuple:
    """This worker's loaded build (the index, its shards' vectors read so far) and the run's
    filter keys (`same`: (run nonce, broadcast SameValues) or None), kept for later tasks."""
    key = f"{Store(config.index_root).uri}|{surface}|{build_id}"
    if key not in _LOADED:
        _LOADED.clear()  # one build per worker at a time
        index = ShardedIndex.load(config.index_root, surface, build_id, config.cache_dir)
        _LOADED[key] = (index, {}, {})
    index, shards, values = _LOADED[key]
    if same is not None and same[0] not in values:
        values.clear()
        values[same[0]] = SameValues.from_ipc(same[1].value)
    return index, shards, same and values[same[0]]


def _task(config: NeighboursConfig, surface: str, build_id: str, out: str, tag: str, same):
    """(shard, start, stop) -> the neighbours of those products of the shard, written as one
    file of the table; its description and the rows short of k neighbours (JSON)."""

    def neighbours(tasks):
        threads, _, _ = task_slot()
        for shard, start, stop in tasks:
            index, shards, values = _build(config, surface, build_id, same)
            if shard not in shards:
                shards.clear()
                shards[shard] = shard_vectors(index, shard)
            ids, vectors = shards[shard]
            rows, short = neighbour_rows(
                index, ids[start:stop], vectors[start:stop], config.k, threads, values
            )
            yield json.dumps({"file": write_file(out, rows, tag), "short": short})

    return neighbours


def same_values(
    spark: SparkSession, config: NeighboursConfig, manifest: dict, columns: tuple[str, ...]
) -> tuple[bytes, dict]:
    """The build's products' keys in the catalog `columns` (SameValues as Arrow IPC), and the
    counts of products the catalog lacks and of null values per column. Catalog ids on more
    than one row are left out (the embedding job never embeds them)."""
    catalog = read_catalog(spark, absolute_uri(config.catalog), config.mapping)
    for column in columns:
        if column not in catalog.columns:
            raise ItemSageError(
                f"surface {manifest['surface']!r}: neighbours_exclude_same: "
                f"{no_column(column, catalog.columns)} in {config.catalog}"
            )
    keys = catalog.select(
        PRODUCT_ID,
        F.lit(True).alias("_in_catalog"),
        *[F.when(F.col(c).isNotNull(), F.xxhash64(c)).alias(c) for c in columns],
    )
    keys = without_repeated_ids(keys)
    served = base_ids(spark, Store(config.index_root), manifest, keys=False).select(PRODUCT_ID)
    table = served.join(keys, PRODUCT_ID, "left").toArrow()
    counts = {
        "not_in_catalog": table.column("_in_catalog").null_count,
        "null": {c: table.column(c).null_count - table.column("_in_catalog").null_count
                 for c in columns},
    }  # fmt: skip
    table = table.drop_columns("_in_catalog")
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue(), counts


def write_neighbours(
    spark: SparkSession, config: NeighboursConfig, progress: Callable[[str], None] = print
) -> dict:
    """Write each surface's neighbours table; the run summary per surface (`status` written or
    unchanged, the table and its version, the build, products)."""
    for surface, columns in config.exclude_same.items():
        if columns and not config.catalog:
            raise ItemSageError(
                f"surface {surface!r} excludes neighbours with the same {', '.join(columns)}: "
                "pass --catalog (and --mapping) to read them"
            )
    store = Store(config.index_root)
    summary = {"index_root": store.uri, "k": config.k, "surfaces": {}}
    for surface in config.surfaces:
        build_id = config.build_id or current_pointer(store, surface).build_id
        if build_id is None:
            raise ItemSageError(f"{store.path(surface)} has no CURRENT build (run build-index)")
        manifest = read_build_manifest(store, build_key(surface, build_id))
        summary["surfaces"][surface] = _surface_table(spark, config, manifest, progress)
    return summary


def _surface_table(
    spark: SparkSession, config: NeighboursConfig, manifest: dict, progress: Callable[[str], None]
) -> dict:
    """One surface's neighbours table written (or found already written) for its build."""
    surface, build_id = manifest["surface"], manifest["build_id"]
    out = f"{config.out_root.rstrip('/')}/{surface}"
    columns = tuple(config.exclude_same.get(surface, ()))
    tag = run_id(surface, build_id, config.k, columns)
    result = {"table": out, "build_id": build_id, "products": manifest["products"]}
    if columns:
        result["exclude_same"] = list(columns)
    done = committed_version(out, tag)
    if done is not None:
        progress(f"{surface}: neighbours of build {build_id} already in {out} (version {done})")
        return {**result, "status": "unchanged", "version": done}
    done_tasks = _run_tasks(spark, config, manifest, out, tag, result, progress)
    files = [t["file"] for t in done_tasks]
    rows = sum(f["rows"] for f in files)
    if rows != manifest["products"]:
        raise ItemSageError(
            f"{surface}: the tasks wrote {rows} rows for {manifest['products']} products; "
            f"{out} is unchanged"
        )
    result["short_of_k"] = sum(t["short"] for t in done_tasks)
    crash_point("before_commit")
    metadata = {"surface": surface, "k": config.k, **result}
    version = commit_files(out, files, NEIGHBOURS_SCHEMA, "overwrite", tag, metadata)
    progress(
        f"{surface}: wrote {rows} rows to {out} (version {version}; "
        f"{result['short_of_k']} with fewer than {config.k} neighbours)"
    )
    return {**result, "status": "written", "version": version}


def _run_tasks(
    spark: SparkSession,
    config: NeighboursConfig,
    manifest: dict,
    out: str,
    tag: str,
    result: dict,
    progress: Callable[[str], None],
) -> list[dict]:
    """The Spark tasks that write a surface's rows, one per run of CHUNK products of a shard
    (with its neighbours_exclude_same values broadcast, counted in `result`); what each
    wrote."""
    surface, build_id = manifest["surface"], manifest["build_id"]
    columns = tuple(config.exclude_same.get(surface, ()))
    tasks = [
        (s, start, min(start + CHUNK, entry["count"]))
        for s, entry in enumerate(manifest["shards"])
        for start in range(0, entry["count"], CHUNK)
    ]
    filters = f", none sharing its {', '.join(columns)}" if columns else ""
    progress(
        f"{surface}: top {config.k} neighbours{filters} of {manifest['products']} products "
        f"of build {build_id} in {len(tasks)} tasks"
    )
    with (
        stage_progress(spark, progress, f"itemsage neighbours: {surface}"),
        spark_failures("finding the neighbours", f"{out} is unchanged"),
    ):
        same = None
        if columns:
            keys, result["values"] = same_values(spark, config, manifest, columns)
            progress(f"{surface}: values of {', '.join(columns)}: {result['values']}")
            same = (uuid.uuid4().hex, spark.sparkContext.broadcast(keys))
        done = [
            json.loads(f)
            for f in spark.sparkContext.parallelize(tasks, len(tasks))
            .mapPartitions(_task(config, surface, build_id, out, tag, same))
            .collect()
        ]
        if same is not None:
            same[1].destroy()
    return done
