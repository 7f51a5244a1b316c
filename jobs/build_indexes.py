"""The index-building job: a pinned version of the embeddings table -> per-surface eligible
products -> shards -> one hnswlib index per shard, built by one Spark task each -> recall gate ->
manifest -> atomic publish.

The driver plans (counts, k-means centroids from a bounded sample) and commits (manifest,
CURRENT); vectors never come to the driver. Executors write shard files straight into the new
build directory, so INDEX_ROOT must be a path the driver and every executor see (local disk in
local mode; a shared mount on a cluster). docs/indexes.md has the layout and the config.

spark-submit entry point (`spark-submit.sh build-index ...` runs `itemsage build-index ...`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
import sys
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark import TaskContext
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from index_builder.index_layout import (CENTROIDS, FORMAT, build_dir, new_build_id, publish,
                                        write_manifest)
from index_builder.shard_index import ShardParams, build_shard
from index_builder.sharding import ClusterPlan, hash_shards, nearest_centroids, train_centroids
from index_builder.surfaces import Surface
from itemsage_core.catalog_contract import IMAGE_EMBEDDINGS, PRODUCT_ID
from itemsage_core.column_mapping import ColumnMapping
from itemsage_core.errors import ItemSageError
from itemsage_core.local_files import sha256_file
from jobs.catalog_frame import read_catalog
from jobs.delta_frame import read_delta
from jobs.progress import stage_progress

SHARDED = "surface string, shard int, product_id string, embedding array<float>"
BUILT = "surface string, shard int, entry string"


def vectors_of(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A list<float> column of equal-length vectors as an (n, dim) float32 matrix."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    flat = pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(len(column), -1) if len(column) else flat.reshape(0, 0)


def catalog_attributes(spark: SparkSession, catalog: str,
                       mapping: ColumnMapping | None) -> DataFrame:
    """The catalog's columns for surface filters (no image vectors); ids on more than one row
    are left out (the embedding job never embeds them either)."""
    attributes = read_catalog(spark, catalog, mapping).drop(IMAGE_EMBEDDINGS)
    repeated = attributes.groupBy(PRODUCT_ID).count().where(F.col("count") > 1)
    return attributes.join(repeated.select(PRODUCT_ID), PRODUCT_ID, "left_anti")


def eligible_rows(table: DataFrame, surface: Surface,
                  attributes: DataFrame | None) -> DataFrame:
    """product_id, embedding, model_version of the products the surface serves."""
    rows = table if attributes is None else table.join(attributes, PRODUCT_ID, "left")
    if surface.filter:
        try:
            rows = rows.where(surface.filter)
        except AnalysisException as exc:
            hint = "" if attributes is not None else " (pass --catalog to filter on its columns)"
            raise ItemSageError(
                f"surface {surface.name!r}: filter {surface.filter!r} does not apply: "
                f"{str(exc).splitlines()[0]}; columns: {', '.join(rows.columns)}{hint}") from None
    return rows.select(PRODUCT_ID, "embedding", "model_version")


@dataclasses.dataclass
class SurfacePlan:
    surface: Surface
    build_id: str
    products: int
    dim: int
    model_version: str
    sharded: DataFrame
    clusters: list[int] | None = None      # k-means: the cluster of each shard
    centroids: np.ndarray | None = None


def _with_hash_shards(name: str, shards: int):
    def assign(batches):
        for batch in batches:
            ids = batch.column(PRODUCT_ID)
            yield pa.RecordBatch.from_arrays(
                [pa.array([name] * len(ids), pa.string()),
                 pa.array(hash_shards(ids, shards), pa.int32()), ids, batch.column("embedding")],
                ["surface", "shard", PRODUCT_ID, "embedding"])
    return assign


def _with_clusters(centroids: np.ndarray, plan: ClusterPlan | None, name: str):
    """Add each row's nearest cluster (plan None) or its k-means shard (plan given)."""
    def assign(batches):
        for batch in batches:
            ids = batch.column(PRODUCT_ID)
            cluster = nearest_centroids(vectors_of(batch.column("embedding")), centroids)[:, 0]
            shard = cluster if plan is None else plan.shard_of(cluster, ids)
            yield pa.RecordBatch.from_arrays(
                [pa.array([name] * len(ids), pa.string()), pa.array(shard, pa.int32()), ids,
                 batch.column("embedding")], ["surface", "shard", PRODUCT_ID, "embedding"])
    return assign


def plan_surface(spark: SparkSession, rows: DataFrame, surface: Surface, table_version: int,
                 progress: Callable[[str], None]) -> SurfacePlan:
    """Count the surface's products, check they share one model and dimension, and assign
    each to a shard (k-means: train centroids on a bounded sample first)."""
    stats = rows.groupBy("model_version").agg(
        F.count(F.lit(1)).alias("n"), F.min(F.size("embedding")).alias("low"),
        F.max(F.size("embedding")).alias("high")).collect()
    if not stats:
        raise ItemSageError(f"surface {surface.name!r}: no eligible products "
                            f"(filter {surface.filter!r})")
    if len(stats) > 1:
        raise ItemSageError(f"surface {surface.name!r}: the table mixes model versions "
                            f"{sorted(r['model_version'] for r in stats)}; their vectors are not "
                            "comparable, re-embed the catalog with one model")
    (row,) = stats
    if row["low"] != row["high"]:
        raise ItemSageError(f"surface {surface.name!r}: embeddings of {row['low']} to "
                            f"{row['high']} dimensions in one table")
    products, dim = row["n"], row["high"]
    plan = SurfacePlan(surface, new_build_id(table_version), products, dim,
                       row["model_version"], rows)
    count = surface.shard_count(products)
    if surface.sharding == "hash":
        plan.sharded = rows.mapInArrow(_with_hash_shards(surface.name, count), SHARDED)
        progress(f"{surface.name}: {products} products -> {count} hash shards")
        return plan
    fraction = min(1.0, surface.kmeans_sample / products)
    sample = rows.sample(fraction=fraction, seed=surface.seed).select("embedding").toArrow()
    plan.centroids = train_centroids(vectors_of(sample.column("embedding")), count,
                                     surface.seed)
    clustered = rows.mapInArrow(_with_clusters(plan.centroids, None, surface.name), SHARDED)
    counts = {r["shard"]: r["count"] for r in clustered.groupBy("shard").count().collect()}
    clusters = ClusterPlan.from_counts(counts, len(plan.centroids), surface.target_shard_size)
    plan.clusters = clusters.cluster_of_shard()
    plan.sharded = rows.mapInArrow(_with_clusters(plan.centroids, clusters, surface.name),
                                   SHARDED)
    progress(f"{surface.name}: {products} products -> {len(plan.centroids)} k-means clusters "
             f"(trained on {sample.num_rows}) -> {clusters.shards} shards")
    return plan


def _build_task(params: dict[str, ShardParams], directories: dict[str, str]):
    """One group = one shard: build it with the task's cores, write it, describe it."""
    def build(key, table):  # no annotations: PySpark 4.3 would try to infer the UDF type
        surface, shard = key[0].as_py(), key[1].as_py()
        context = TaskContext.get()
        threads = max(1, context.cpus() if context else 1)
        entry = build_shard(table.column(PRODUCT_ID).combine_chunks(),
                            vectors_of(table.column("embedding")), shard,
                            directories[surface], params[surface], threads)
        return pa.table({"surface": pa.array([surface]), "shard": pa.array([shard], pa.int32()),
                         "entry": pa.array([json.dumps(entry)])})
    return build


def _manifest(plan: SurfacePlan, directory, entries: list[dict], table_uri: str,
              table_version: int, catalog: str | None, seconds: dict) -> dict:
    surface = plan.surface
    if plan.clusters is not None:
        for entry in entries:
            entry["cluster"] = plan.clusters[entry["shard"]]
    recalls = np.array([e["recall_at_10"] for e in entries])
    counts = np.array([e["count"] for e in entries])
    return {
        "format": FORMAT, "surface": surface.name, "build_id": plan.build_id,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "table": {"uri": table_uri, "version": table_version}, "catalog": catalog,
        "model_version": plan.model_version, "filter": surface.filter,
        "params": {**surface.params(), "space": "ip", "dim": plan.dim, "shards": len(entries)},
        "products": int(counts.sum()), "shards": entries,
        "centroids": None if plan.centroids is None else {
            "path": CENTROIDS, "sha256": sha256_file(directory / CENTROIDS)},
        "recall_at_10": {"min": float(recalls.min()),
                         "mean": float((recalls * counts).sum() / counts.sum())},
        "seconds": seconds,
    }


def build_indexes(spark: SparkSession, table_uri: str, surfaces: list[Surface], index_root: str,
                  catalog: str | None = None, mapping: ColumnMapping | None = None,
                  table_version: int | None = None, progress=print) -> dict:
    """Build, gate and publish every surface; returns the run summary. A surface that fails its
    recall gate publishes nothing (its new build is deleted); the others still publish."""
    started = time.perf_counter()
    table, version = read_delta(spark, table_uri, table_version)
    if table is None:
        raise ItemSageError(f"{table_uri} is not a Delta table (run `itemsage embed` first)")
    progress(f"building {', '.join(s.name for s in surfaces)} from {table_uri} "
             f"version {version}")
    attributes = catalog_attributes(spark, catalog, mapping) if catalog else None
    plans = [plan_surface(spark, eligible_rows(table, s, attributes), s, version, progress)
             for s in surfaces]
    planned = time.perf_counter()
    directories = {}
    for plan in plans:
        directory = build_dir(index_root, plan.surface.name, plan.build_id)
        directory.mkdir(parents=True)
        directories[plan.surface.name] = str(directory)
        if plan.centroids is not None:
            np.save(directory / CENTROIDS, plan.centroids, allow_pickle=False)
    params = {p.surface.name: ShardParams(p.surface.M, p.surface.ef_construction,
                                          p.surface.ef_search, p.surface.recall_queries,
                                          p.surface.query_noise, p.surface.seed) for p in plans}
    sharded = plans[0].sharded
    for plan in plans[1:]:
        sharded = sharded.unionByName(plan.sharded)
    tasks = sum(p.surface.shard_count(p.products) if p.clusters is None else len(p.clusters)
                for p in plans)
    with stage_progress(spark, progress):
        built = (sharded.repartition(max(1, tasks), "surface", "shard")
                 .groupBy("surface", "shard").applyInArrow(_build_task(params, directories),
                                                           BUILT).collect())
    finished = time.perf_counter()
    summary = {"table": table_uri, "table_version": version, "index_root": index_root,
               "surfaces": {}}
    for plan in plans:
        name = plan.surface.name
        entries = sorted((json.loads(r["entry"]) for r in built if r["surface"] == name),
                         key=lambda e: e["shard"])
        seconds = {"plan_s": planned - started, "build_s": finished - planned,
                   "add_items_s": sum(e["add_items_s"] for e in entries),
                   "max_shard_s": max(e["build_s"] for e in entries)}
        directory = build_dir(index_root, name, plan.build_id)
        manifest = _manifest(plan, directory, entries, table_uri, version, catalog, seconds)
        if manifest["products"] != plan.products:
            raise ItemSageError(f"surface {name!r}: shards hold {manifest['products']} "
                                f"products, {plan.products} were eligible")
        low = [e for e in entries if e["recall_at_10"] < plan.surface.min_recall]
        result = {"build_id": plan.build_id, "products": plan.products,
                  "shards": len(entries), "recall_at_10": manifest["recall_at_10"],
                  "min_recall": plan.surface.min_recall, "seconds": seconds}
        if low:
            shutil.rmtree(directory)
            worst = ", ".join(f"shard {e['shard']}: {e['recall_at_10']:.3f}" for e in low[:5])
            progress(f"{name}: recall gate FAILED (min_recall {plan.surface.min_recall}; "
                     f"{worst}); nothing published, the current build stays")
            summary["surfaces"][name] = {**result, "status": "failed_recall_gate"}
            continue
        write_manifest(directory, manifest)
        deleted = publish(index_root, name, plan.build_id, plan.surface.keep_builds)
        progress(f"{name}: published build {plan.build_id}: {plan.products} products in "
                 f"{len(entries)} shards, recall@10 min {manifest['recall_at_10']['min']:.3f} "
                 f"mean {manifest['recall_at_10']['mean']:.3f}")
        summary["surfaces"][name] = {**result, "status": "published", "deleted_builds": deleted}
    summary["seconds"] = time.perf_counter() - started
    return summary


def main(argv: list[str] | None = None) -> None:
    from itemsage_cli.main import cli

    cli(["build-index", *(sys.argv[1:] if argv is None else argv)], prog_name="itemsage")


if __name__ == "__main__":
    main()
