"""Incremental index refresh on Spark (`itemsage build-index --incremental`): a surface's
published build, the table version it was built from and the target version -> the change set
(computed on the executors: products added, removed, whose content changed, whose eligibility
flipped) -> one Spark task per changed shard updates it (index_builder.shard_update) and uploads
it into a new build; unchanged shards are copied -> the same recall gate and publish as a full
build. A surface that cannot be refreshed (index_builder.refresh_plan.Rebuild) is rebuilt."""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark import StorageLevel, TaskContext
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from index_builder.layout import CENTROIDS, Pointer, build_key, new_build_id, read_build_manifest
from index_builder.partitioning import routing_recall, vectors_of
from index_builder.plan import ROUTING_QUERIES, SurfaceFailure
from index_builder.refresh_plan import (
    Rebuild,
    ShardRouter,
    carried_entry,
    overflow_reason,
    rebuild_reason,
)
from index_builder.shard_build import ShardParams
from index_builder.shard_update import update_shard
from index_builder.surfaces import Surface
from itemsage_core.contracts.catalog_contract import PRODUCT_ID
from itemsage_core.storage.store import Store
from jobs.crash_points import crash_point
from jobs.delta_frame import read_delta

CHANGES = "shard int, op string, product_id string, embedding array<float>"


def base_ids(spark: SparkSession, store: Store, base: dict) -> DataFrame:
    """product_id, shard of every product in the base build, read from its id maps by the
    executors."""
    key = build_key(base["surface"], base["build_id"])
    files = [(s["shard"], f"{key}/{s['files']['ids']['path']}") for s in base["shards"]]
    frame = spark.createDataFrame(files, "shard int, key string")

    def read(batches):
        for batch in batches:
            for shard, path in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
                ids = pq.read_table(io.BytesIO(store.read_bytes(path)), columns=[PRODUCT_ID])
                yield pa.RecordBatch.from_pydict(
                    {
                        PRODUCT_ID: ids.column(0).combine_chunks(),
                        "shard": pa.array([shard] * ids.num_rows, pa.int32()),
                    }
                )

    tasks = min(len(files), spark.sparkContext.defaultParallelism)
    return frame.repartition(tasks).mapInArrow(read, "product_id string, shard int")


def change_set(
    eligible: DataFrame, base_hashes: DataFrame, ids: DataFrame, router: ShardRouter
) -> DataFrame:
    """CHANGES rows: `remove` (from its base shard) for each base product gone, no longer
    eligible or changed; `add` (to its routed shard) for each eligible product new or changed."""
    keys = eligible.select(PRODUCT_ID, "content_hash")
    joined = keys.join(ids, PRODUCT_ID, "full_outer").join(base_hashes, PRODUCT_ID, "left")
    changed = F.col("content_hash") != F.col("base_hash")
    removed = joined.where(F.col("shard").isNotNull() & (F.col("content_hash").isNull() | changed))
    new_ids = joined.where(F.col("content_hash").isNotNull() & (F.col("shard").isNull() | changed))
    # Only the added rows bring their vectors: their ids are few (a refresh with many changes
    # is a rebuild), so they are broadcast and the table's vectors are never shuffled.
    added = eligible.join(F.broadcast(new_ids.select(PRODUCT_ID)), PRODUCT_ID, "left_semi")

    def route(batches):
        for batch in batches:
            shards = router.shards(batch.column(PRODUCT_ID), vectors_of(batch.column("embedding")))
            yield pa.RecordBatch.from_pydict(
                {
                    "shard": pa.array(shards, pa.int32()),
                    "op": pa.array(["add"] * len(batch), pa.string()),
                    PRODUCT_ID: batch.column(PRODUCT_ID),
                    "embedding": batch.column("embedding"),
                }
            )

    removes = removed.select(
        "shard",
        F.lit("remove").alias("op"),
        PRODUCT_ID,
        F.lit(None).cast("array<float>").alias("embedding"),
    )
    return removes.unionByName(added.select(PRODUCT_ID, "embedding").mapInArrow(route, CHANGES))


class RefreshPlan:
    """One surface's refresh: its base build, the change set and what its tasks need."""

    def __init__(self, surface: Surface, base: dict, pointer: Pointer, table_version: int):
        self.surface, self.base, self.pointer = surface, base, pointer
        self.build_id = new_build_id(table_version)
        self.dim = base["params"]["dim"]
        self.changes: DataFrame | None = None
        self.counts: dict[int, tuple[int, int]] = {}
        self.routing_recall: float | None = None

    @property
    def key(self) -> str:
        return build_key(self.surface.name, self.build_id)


def plan_refresh(
    spark: SparkSession,
    surface: Surface,
    pointer: Pointer,
    store: Store,
    eligible: DataFrame,
    table_uri: str,
    table_version: int,
    model_version: str,
) -> RefreshPlan:
    """The surface's refresh plan over its current build `pointer`, or Rebuild(reason)."""
    if pointer.build_id is None:
        raise Rebuild("no published build to refresh")
    try:
        base = read_build_manifest(store, build_key(surface.name, pointer.build_id))
    except (OSError, ValueError) as exc:
        raise Rebuild(f"the current build cannot be read ({exc})") from None
    reason = rebuild_reason(surface, base, model_version)
    if reason:
        raise Rebuild(reason)
    plan = RefreshPlan(surface, base, pointer, table_version)
    centroids = None
    if base.get("centroids"):
        key = f"{build_key(surface.name, base['build_id'])}/{CENTROIDS}"
        centroids = np.load(io.BytesIO(store.read_bytes(key)), allow_pickle=False)
        sample = eligible.sample(fraction=min(1.0, surface.kmeans_sample / base["products"]))
        vectors = vectors_of(sample.select("embedding").toArrow().column("embedding"))
        live = sorted({s["cluster"] for s in base["shards"]})
        plan.routing_recall = routing_recall(
            vectors,
            centroids[live],
            surface.probe_clusters,
            ROUTING_QUERIES,
            surface.query_noise,
            surface.seed,
        )
        if plan.routing_recall < surface.min_recall:
            raise Rebuild(
                f"k-means routing keeps {plan.routing_recall:.3f} of the top 10 on the new "
                f"vectors, below min_recall {surface.min_recall}"
            )
    base_table, _ = read_delta(spark, table_uri, base["table"]["version"])
    hashes = base_table.select(PRODUCT_ID, F.col("content_hash").alias("base_hash"))
    router = ShardRouter.of(base, centroids)
    plan.changes = change_set(eligible, hashes, base_ids(spark, store, base), router).persist(
        StorageLevel.MEMORY_AND_DISK
    )
    plan.counts = {}
    for row in plan.changes.groupBy("shard", "op").count().collect():
        added, removed = plan.counts.get(row["shard"], (0, 0))
        n = row["count"]
        plan.counts[row["shard"]] = (
            (added + n, removed) if row["op"] == "add" else (added, removed + n)
        )
    reason = overflow_reason(surface, base, plan.counts)
    if reason:
        raise Rebuild(reason)
    return plan


def _update_task(plans: dict[str, tuple[Surface, dict, str, int]], store: Store):
    """One partition = the changes of one shard of one surface (its surface, base manifest, new
    build key, dimension in `plans`): the base shard downloaded, updated, gated and uploaded into
    the new build; one (surface, JSON entry)."""

    def update(records):
        records = list(records)
        if not records:
            return
        (name, shard), _ = records[0]
        surface, base, new_key, dim = plans[name]
        entry = next(s for s in base["shards"] if s["shard"] == shard)
        removed = [pid for _, (op, pid, _) in records if op == "remove"]
        adds = [(pid, vector) for _, (op, pid, vector) in records if op == "add"]
        context = TaskContext.get()
        threads = max(1, context.cpus() if context else 1)
        attempt = str(context.taskAttemptId()) if context else ""
        scratch = (os.environ.get("SPARK_LOCAL_DIRS") or "").split(",")[0] or None
        base_key = build_key(name, base["build_id"])
        with tempfile.TemporaryDirectory(prefix="itemsage-refresh-", dir=scratch) as local:
            if not store.local:  # a local base shard is read in place
                for described in entry["files"].values():
                    path = described["path"]
                    store.download(f"{base_key}/{path}", f"{local}/{path}")
            os.mkdir(f"{local}/new")
            s = surface
            new = update_shard(
                store.local_path(base_key) if store.local else local,
                entry,
                pa.array(removed, pa.string()),
                pa.array([pid for pid, _ in adds], pa.string()),
                np.array([v for _, v in adds], np.float32).reshape(len(adds), dim),
                f"{local}/new",
                ShardParams(s.M, s.ef_construction, s.ef_search, s.recall_queries,
                            s.query_noise, s.seed),
                dim,
                threads,
            )  # fmt: skip
            for described in new["files"].values():
                name_ = f"a{attempt}-{described['path']}" if attempt else described["path"]
                store.upload(f"{local}/new/{described['path']}", f"{new_key}/{name_}")
                described["path"] = name_
                crash_point("between_shard_uploads")
        yield name, json.dumps(new)

    return update


def refresh_shards(
    spark: SparkSession, plans: list[RefreshPlan], index_root: str
) -> dict[str, list[dict]]:
    """Every changed shard of every plan updated by its own task (one Spark stage) and every
    unchanged one copied into the plan's new build; each surface's shard entries."""
    store = Store(index_root)
    entries: dict[str, list[dict]] = defaultdict(list)
    tasks = {}
    for plan in plans:
        for shard in plan.base["shards"]:
            if plan.counts.get(shard["shard"], (0, 0)) != (0, 0):
                tasks[(plan.surface.name, shard["shard"])] = len(tasks)
                continue
            base_key = build_key(plan.surface.name, plan.base["build_id"])
            for described in shard["files"].values():
                store.copy(f"{base_key}/{described['path']}", f"{plan.key}/{described['path']}")
            entries[plan.surface.name].append(carried_entry(shard))
        if plan.base.get("centroids"):
            base_key = build_key(plan.surface.name, plan.base["build_id"])
            store.copy(f"{base_key}/{CENTROIDS}", f"{plan.key}/{CENTROIDS}")
    if tasks:
        changes = [
            p.changes.withColumn("surface", F.lit(p.surface.name)) for p in plans if p.changes
        ]
        frame = changes[0]
        for other in changes[1:]:
            frame = frame.unionByName(other)
        updated = (
            frame.rdd.map(
                lambda r: (
                    (r["surface"], r["shard"]),
                    (r["op"], r[PRODUCT_ID], r["embedding"]),
                )
            )
            .partitionBy(len(tasks), lambda key: tasks[key])
            .mapPartitions(
                _update_task(
                    {p.surface.name: (p.surface, p.base, p.key, p.dim) for p in plans}, store
                )
            )
            .collect()
        )
        for name, entry in updated:
            entries[name].append(json.loads(entry))
    for plan in plans:
        plan.changes.unpersist()
    return entries


def refreshed_manifest(plan: RefreshPlan, entries: list[dict], provenance: dict) -> dict:
    """The refreshed build's manifest: a full build's fields, the base's k-means centroids and
    clusters, and its lineage."""
    from index_builder.build_release import assemble_manifest

    base = plan.base
    clusters = {s["group"]: s["cluster"] for s in base["shards"] if "cluster" in s}
    manifest = assemble_manifest(
        plan.surface,
        plan.build_id,
        entries,
        model_version=base["model_version"],
        dim=plan.dim,
        group_clusters=[clusters.get(g) for g in range(1 + max(clusters, default=-1))]
        if clusters
        else None,
        routing_recall=plan.routing_recall,
        centroids=base.get("centroids"),
        **provenance,
    )
    added = sum(a for a, _ in plan.counts.values())
    removed = sum(r for _, r in plan.counts.values())
    manifest["lineage"] = {
        "base_build": base["build_id"],
        "base_table_version": base["table"]["version"],
        "table_version": provenance["table_version"],
        "added": added,
        "removed": removed,
        "tombstones": sum(e.get("tombstones", 0) for e in entries),
    }
    return manifest


def release_refresh(plan: RefreshPlan, entries: list[dict], index_root: str, progress):
    """What releases the refreshed build (given the run's provenance): its manifest past the
    same recall gate as a full build, published over the build it refreshed; the release result,
    or SurfaceFailure."""
    from index_builder.build_release import release_build

    def release(provenance: dict) -> dict:
        manifest = refreshed_manifest(plan, entries, provenance)
        result = release_build(index_root, plan.surface, manifest, plan.pointer)
        if result["status"] != "published":
            raise SurfaceFailure(result["reason"], result)
        progress(
            f"{plan.surface.name}: published refreshed build {plan.build_id} "
            f"({manifest['products']} products, base {plan.base['build_id']})"
        )
        return {**result, "mode": "incremental", "lineage": manifest["lineage"]}

    return release
