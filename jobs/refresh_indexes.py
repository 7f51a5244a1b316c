"""Incremental index refresh on Spark (`itemsage build-index --incremental`): a surface's
published build and the target table version -> the change set (computed on the executors by
comparing each product's content key with the one the build's id maps recorded) -> one Spark
task per shard updates it (index_builder.shard_update), or carries it over when nothing in it
changed, into a new build -> the same recall gate and publish as a full build. A surface that
cannot be refreshed (index_builder.refresh_plan.Rebuild) is rebuilt."""

from __future__ import annotations

import io
import json
import tempfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from index_builder.build_release import missing_files
from index_builder.layout import CENTROIDS, Pointer, build_key, new_build_id, read_build_manifest
from index_builder.partitioning import routing_recall, vectors_of
from index_builder.plan import SurfaceFailure, upload_shards
from index_builder.refresh_plan import (
    ClusterRouter,
    Rebuild,
    carried_entry,
    churn_reason,
    fill_shards,
    overflow_reason,
    rebuild_reason,
)
from index_builder.served_gate import served_text
from index_builder.shard_build import ShardParams
from index_builder.shard_update import update_shard
from index_builder.surfaces import Surface
from itemsage_core.contracts.catalog_contract import PRODUCT_ID
from itemsage_core.errors import ItemSageError
from itemsage_core.storage.store import Store
from jobs.crash_points import crash_point
from jobs.progress import stage_progress
from jobs.spark_failures import spark_failures
from jobs.spark_session import task_slot

CHANGES = "shard int, op string, product_id string, content_key long, embedding array<float>"
ROUTING_QUERIES = 1000  # noisy sample queries measuring whether the base's routing still holds


def base_ids(spark: SparkSession, store: Store, base: dict, keys: bool = True) -> DataFrame:
    """product_id, shard and (with `keys`) base_key, the content key, of every product in the
    base build, read from its id maps by the executors."""
    key = build_key(base["surface"], base["build_id"])
    files = [(s["shard"], f"{key}/{s['files']['ids']['path']}") for s in base["shards"]]
    frame = spark.createDataFrame(files, "shard int, key string")
    columns = [PRODUCT_ID, "content_key"] if keys else [PRODUCT_ID]

    def read(batches):
        for batch in batches:
            for shard, path in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
                ids = pq.read_table(io.BytesIO(store.read_bytes(path)), columns=columns)
                yield pa.RecordBatch.from_pydict(
                    {
                        PRODUCT_ID: ids.column(0).combine_chunks(),
                        "shard": pa.array(np.full(ids.num_rows, shard, np.int32)),
                        **({"base_key": ids.column(1).combine_chunks()} if keys else {}),
                    }
                )

    tasks = min(len(files), spark.sparkContext.defaultParallelism)
    schema = "product_id string, shard int" + (", base_key long" if keys else "")
    return frame.repartition(tasks).mapInArrow(read, schema)


def classify(eligible: DataFrame, ids: DataFrame) -> DataFrame:
    """product_id, op, shard, changed, model_version of each product whose row differs from the
    base build's: a `remove` from its base shard for each base product gone, no longer eligible
    or changed; an `add` (shard null) for each eligible product new or changed (`changed`: it
    is both)."""
    keys = eligible.select(PRODUCT_ID, "content_key", "model_version")
    joined = keys.join(ids, PRODUCT_ID, "full_outer")
    changed = F.coalesce(F.col("content_key") != F.col("base_key"), F.lit(False))
    remove = F.col("shard").isNotNull() & (F.col("content_key").isNull() | changed)
    add = F.col("content_key").isNotNull() & (F.col("shard").isNull() | changed)
    ops = F.array_compact(F.array(F.when(remove, "remove"), F.when(add, "add")))
    return (
        joined.where(remove | add)
        .select(PRODUCT_ID, "shard", changed.alias("changed"), "model_version", F.explode(ops))
        .select(
            PRODUCT_ID,
            F.col("col").alias("op"),
            F.when(F.col("col") == "remove", F.col("shard")).alias("shard"),
            "changed",
            "model_version",
        )
    )


class RefreshPlan:
    """One surface's refresh: its base build, the change set and what its tasks need."""

    def __init__(self, surface: Surface, base: dict, pointer: Pointer, table_version: int):
        self.surface, self.base, self.pointer = surface, base, pointer
        self.build_id = new_build_id(table_version)
        self.dim = base["params"]["dim"]
        self.changes: DataFrame | None = None  # CHANGES rows
        self.removed: dict[int, int] = {}  # shard -> products taken out
        self.added: dict[int, int] = {}  # shard -> products put in
        self.lineage: dict[str, int] = {}  # products new, gone, changed
        self._persisted: list[DataFrame] = []

    @property
    def key(self) -> str:
        return build_key(self.surface.name, self.build_id)

    def persist(self, frame: DataFrame) -> DataFrame:
        self._persisted.append(frame.persist(StorageLevel.MEMORY_AND_DISK))
        return frame

    def unpersist(self) -> None:
        for frame in self._persisted:
            frame.unpersist()


def plan_refresh(
    spark: SparkSession,
    surface: Surface,
    pointer: Pointer,
    store: Store,
    eligible: DataFrame,
    table_version: int,
) -> RefreshPlan:
    """The surface's refresh plan over its current build `pointer` (`eligible`: its products,
    jobs.build_indexes.eligible_rows), or Rebuild(reason)."""
    if pointer.build_id is None:
        raise Rebuild("no published build to refresh")
    key = build_key(surface.name, pointer.build_id)
    try:
        base = read_build_manifest(store, key)
        missing = missing_files(store, key, base)
    except (OSError, ValueError, KeyError, ItemSageError) as exc:  # lost or damaged
        raise Rebuild(f"the current build cannot be read ({exc})") from None
    if missing:
        raise Rebuild(f"the current build lacks {len(missing)} files (e.g. {missing[0]})")
    reason = rebuild_reason(surface, base)
    if reason:
        raise Rebuild(reason)
    plan = RefreshPlan(surface, base, pointer, table_version)
    try:
        _plan_changes(spark, plan, store, eligible)
    except Rebuild:
        plan.unpersist()
        raise
    return plan


def _plan_changes(spark: SparkSession, plan: RefreshPlan, store: Store, eligible: DataFrame):
    """The plan's change set (CHANGES rows) and its counts, or Rebuild when the changes are
    too many for the base build or another model made them."""
    surface, base = plan.surface, plan.base
    router = _cluster_router(plan, store, eligible) if base.get("centroids") else None
    changes = plan.persist(classify(eligible, base_ids(spark, store, base)))
    counts = changes.groupBy("op", "shard", "changed", "model_version").count().collect()
    models = {r["model_version"] for r in counts if r["op"] == "add"} - {base["model_version"]}
    if models:
        raise Rebuild(f"the model changed ({base['model_version']} -> {', '.join(sorted(models))})")
    plan.removed = defaultdict(int)
    for r in counts:
        if r["op"] == "remove":
            plan.removed[r["shard"]] += r["count"]
    plan.lineage = {
        what: sum(r["count"] for r in counts if r["op"] == op and r["changed"] == changed)
        for what, op, changed in (("new", "add", False), ("gone", "remove", False))
    }
    plan.lineage["changed"] = sum(r["count"] for r in counts if r["op"] == "add" and r["changed"])
    added = plan.lineage["new"] + plan.lineage["changed"]
    reason = churn_reason(surface, base, added)
    if reason:
        raise Rebuild(reason)
    rows = eligible.select(PRODUCT_ID, "content_key", "embedding")
    if router is None:
        fill = fill_shards(base, plan.removed, added, surface.target_shard_size)
        plan.added = dict(fill)
        ids = sorted(r[0] for r in changes.where(F.col("op") == "add").select(PRODUCT_ID).collect())
        shards = np.repeat([s for s, _ in fill], [n for _, n in fill]).astype(np.int32)
        assigned = spark.createDataFrame(pa.table({PRODUCT_ID: ids, "shard": shards}))
        adds = rows.join(F.broadcast(assigned), PRODUCT_ID).select(
            "shard", F.lit("add").alias("op"), PRODUCT_ID, "content_key", "embedding"
        )
    else:
        new_ids = changes.where(F.col("op") == "add").select(PRODUCT_ID)
        adds = plan.persist(
            rows.join(F.broadcast(new_ids), PRODUCT_ID, "left_semi").mapInArrow(
                _routed(router), CHANGES
            )
        )
        plan.added = {r["shard"]: r["count"] for r in adds.groupBy("shard").count().collect()}
    reason = overflow_reason(surface, base, plan.removed, plan.added)
    if reason:
        raise Rebuild(reason)
    removes = changes.where(F.col("op") == "remove").select(
        "shard",
        "op",
        PRODUCT_ID,
        F.lit(None).cast("long").alias("content_key"),
        F.lit(None).cast("array<float>").alias("embedding"),
    )
    plan.changes = removes.unionByName(adds)


def _cluster_router(plan: RefreshPlan, store: Store, eligible: DataFrame) -> ClusterRouter:
    """K-means: the base build's centroids as a router, once routing to them keeps the recall
    gate on a sample of the target version's vectors (else Rebuild)."""
    surface, base = plan.surface, plan.base
    key = f"{build_key(surface.name, base['build_id'])}/{CENTROIDS}"
    centroids = np.load(io.BytesIO(store.read_bytes(key)), allow_pickle=False)
    sample = eligible.sample(fraction=min(1.0, surface.kmeans_sample / base["products"]))
    vectors = vectors_of(sample.select("embedding").toArrow().column("embedding"))
    router = ClusterRouter.of(base, centroids)
    probes = base["params"]["probe_clusters"]  # as the base build serves (its tuned value)
    routing = routing_recall(
        vectors, router.centroids, probes, ROUTING_QUERIES, surface.query_noise, surface.seed
    )
    if routing < surface.min_recall:
        raise Rebuild(
            f"k-means routing to {probes} clusters keeps {routing:.3f} of the top 10 on the "
            f"new vectors, below min_recall {surface.min_recall}"
        )
    return router


def _routed(router: ClusterRouter):
    def route(batches):
        for batch in batches:
            yield pa.RecordBatch.from_pydict(
                {
                    "shard": pa.array(router.shards(vectors_of(batch.column("embedding")))),
                    "op": pa.array(["add"] * len(batch), pa.string()),
                    PRODUCT_ID: batch.column(PRODUCT_ID),
                    "content_key": batch.column("content_key"),
                    "embedding": batch.column("embedding"),
                }
            )

    return route


def _refresh_task(plans: dict[str, tuple[Surface, dict, str, int]], shards: list, store: Store):
    """Partition i = the changes of shard shards[i] = (surface, shard number) of a plan (its
    surface, base manifest, new build key, dimension in `plans`): the base shard updated, gated
    and uploaded into the new build, or its files copied there when nothing in it changed; one
    (surface, JSON entry)."""

    def refresh(partition: int, records):
        name, number = shards[partition]
        surface, base, new_key, dim = plans[name]
        entry = next(s for s in base["shards"] if s["shard"] == number)
        base_key = build_key(name, base["build_id"])
        records = [change for _, change in records]
        if not records:
            for described in entry["files"].values():
                store.copy(f"{base_key}/{described['path']}", f"{new_key}/{described['path']}")
            yield name, json.dumps(carried_entry(entry))
            return
        removed = pa.array([pid for op, pid, _, _ in records if op == "remove"], pa.string())
        adds = [(pid, key, vector) for op, pid, key, vector in records if op == "add"]
        added = pa.table(
            {
                PRODUCT_ID: pa.array([a[0] for a in adds], pa.string()),
                "content_key": pa.array([a[1] for a in adds], pa.int64()),
            }
        )
        vectors = np.array([a[2] for a in adds], np.float32).reshape(len(adds), dim)
        threads, attempt, scratch = task_slot()
        with tempfile.TemporaryDirectory(prefix="itemsage-refresh-", dir=scratch) as local:
            if store.local:  # a local base shard is read in place
                base_dir = store.local_path(base_key)
            else:
                base_dir = f"{local}/base"
                for described in entry["files"].values():
                    path = described["path"]
                    store.download(f"{base_key}/{path}", f"{base_dir}/{path}")
            new_dir = Path(local, "new")
            new_dir.mkdir()
            new = update_shard(
                base_dir, entry, removed, added, vectors, new_dir, ShardParams.of(surface), dim,
                threads,
            )  # fmt: skip
            written = {r: d for r, d in new["files"].items() if (new_dir / d["path"]).exists()}
            for described in new["files"].values():
                if described not in written.values():  # carried over (the index file)
                    store.copy(f"{base_key}/{described['path']}", f"{new_key}/{described['path']}")
            upload_shards(
                store, str(new_dir), new_key, [{"files": written}], attempt,
                lambda _: crash_point("between_shard_uploads"),
            )  # fmt: skip
            new["files"].update(written)
        yield name, json.dumps(new)

    return refresh


def refresh_shards(
    spark: SparkSession, plans: list[RefreshPlan], index_root: str, progress: Callable[[str], None]
) -> dict[str, list[dict]]:
    """Every shard of every plan updated, or carried over, by its own task (one Spark stage);
    each surface's shard entries."""
    store = Store(index_root)
    # Spark starts tasks in partition order: the longest first (shards that gain products, then
    # the larger of those that only lose some, then those carried over), so that no long task
    # starts last.
    work = {
        (p.surface.name, s["shard"]): (
            -p.added.get(s["shard"], 0),
            -min(1, p.removed.get(s["shard"], 0)) * s["count"],
        )
        for p in plans
        for s in p.base["shards"]
    }
    shards = sorted(work, key=lambda shard: (work[shard], shard))
    tasks = {shard: i for i, shard in enumerate(shards)}
    for plan in plans:
        if plan.base.get("centroids"):
            base_key = build_key(plan.surface.name, plan.base["build_id"])
            store.copy(f"{base_key}/{CENTROIDS}", f"{plan.key}/{CENTROIDS}")
    frame = None
    for p in plans:
        changes = p.changes.withColumn("surface", F.lit(p.surface.name))
        frame = changes if frame is None else frame.unionByName(changes)
    specs = {p.surface.name: (p.surface, p.base, p.key, p.dim) for p in plans}
    with (
        stage_progress(spark, progress, "itemsage build-index: refresh shards"),
        spark_failures(
            "refreshing the shards", "nothing published, every surface's current build stays"
        ),
    ):
        updated = (
            frame.rdd.map(
                lambda r: (
                    (r["surface"], r["shard"]),
                    (r["op"], r[PRODUCT_ID], r["content_key"], r["embedding"]),
                )
            )
            .partitionBy(len(tasks), lambda key: tasks[key])
            .mapPartitionsWithIndex(_refresh_task(specs, shards, store))
            .collect()
        )
    entries: dict[str, list[dict]] = defaultdict(list)
    for name, entry in updated:
        entries[name].append(json.loads(entry))
    for plan in plans:
        plan.unpersist()
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
        centroids=base.get("centroids"),
        content_keys=True,
        **provenance,
    )
    manifest["lineage"] = {
        "base_build": base["build_id"],
        "base_table_version": base["table"]["version"],
        "table_version": provenance["table_version"],
        **plan.lineage,
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
        expected = plan.base["products"] + sum(plan.added.values()) - sum(plan.removed.values())
        if manifest["products"] != expected:
            Store(index_root).delete(plan.key)
            raise SurfaceFailure(
                f"refreshed shards hold {manifest['products']} products, {expected} were eligible"
            )
        try:
            result = release_build(index_root, plan.surface, manifest, plan.pointer, progress)
        except OSError as exc:  # the store failed: what was written stays for retention
            raise SurfaceFailure(f"publishing into {index_root} failed: {exc}") from None
        if result["status"] != "published":
            raise SurfaceFailure(f"{result['reason']}; `--full` rebuilds the surface", result)
        progress(
            f"{plan.surface.name}: published refreshed build {plan.build_id} "
            f"({manifest['products']} products, base {plan.base['build_id']}), "
            f"{served_text(result['served'])}"
        )
        return {**result, "mode": "incremental", "lineage": manifest["lineage"]}

    return release
