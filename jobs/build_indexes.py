"""The index-building job: a pinned version of the embeddings table -> each surface's eligible
products -> groups (hash buckets or k-means clusters) -> one Spark task per group builds its
hnswlib shards (a group over the target size is cut into several) -> recall gate -> manifest ->
atomic publish.

The driver plans (counts; k-means centroids from a bounded sample, the only vectors it sees)
and publishes (manifest, CURRENT). Executors build shards on their local disk and upload the
files into the new build directory, so INDEX_ROOT is any root the driver and every executor can
reach: a local path in local mode, an object store (s3://, gs://, abfs://, hdfs://) or a shared
mount on a cluster. A surface that cannot be built (SurfaceFailure: its
filter does not apply or matches nothing, its recall gate fails, ...) publishes nothing and keeps
its current build; the others still publish. docs/indexes.md has the layout and the config.
This module is the Spark wiring only; the planning and the release are index_builder's.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections import defaultdict
from collections.abc import Callable

import numpy as np
import pyarrow as pa
from pyspark import StorageLevel
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from index_builder.build_config import BuildIndexConfig
from index_builder.build_run import BuildRun
from index_builder.layout import Pointer, current_pointer
from index_builder.partitioning import hash_groups, nearest_centroids, pack_groups, vectors_of
from index_builder.plan import GroupBuild, SurfaceFailure, SurfacePlan
from index_builder.refresh_plan import Rebuild
from index_builder.surfaces import Surface
from itemsage_core.contracts.catalog_contract import IMAGE_EMBEDDINGS, PRODUCT_ID
from itemsage_core.errors import ItemSageError, no_column
from itemsage_core.storage.store import Store
from itemsage_core.storage.uris import absolute_uri
from jobs.catalog_frame import read_catalog, without_repeated_ids
from jobs.crash_points import crash_point
from jobs.delta_frame import read_delta
from jobs.progress import stage_progress
from jobs.refresh_indexes import RefreshPlan, plan_refresh, refresh_shards, release_refresh
from jobs.spark_failures import spark_failures
from jobs.spark_session import task_slot

# The rows pack_groups makes: vectors travel from the grouping step to the build tasks as raw
# float32 bytes (one value for Spark to copy, joined into one matrix without a per-float step).
GROUPED = "surface string, group int, products binary, vectors binary"


def build_indexes(
    spark: SparkSession, config: BuildIndexConfig, progress: Callable[[str], None] = print
) -> dict:
    """Build, gate and publish every surface that can be; returns the run summary. A surface
    that cannot be (SurfaceFailure) is `failed` there with its `reason` and `current_build`: it
    publishes nothing and its current build stays; the others still publish. Every filter is
    checked before any surface is planned."""
    started = time.perf_counter()
    index_root = Store(config.index_root).uri
    # Each surface publishes only over the build current now, before anything is read.
    bases = {s.name: current_pointer(index_root, s.name) for s in config.surfaces}
    table_uri = absolute_uri(config.table_uri)
    catalog = config.catalog and absolute_uri(config.catalog)
    table, version = read_embeddings(spark, table_uri, config.table_version)
    names = ", ".join(s.name for s in config.surfaces)
    progress(f"building {names} from {table_uri} version {version}")
    run = BuildRun(table_uri, version, catalog, index_root, started, progress)
    frame = read_catalog(spark, catalog, config.mapping).drop(IMAGE_EMBEDDINGS) if catalog else None
    columns = table if frame is None else table.join(frame, PRODUCT_ID, "left")
    checked = run.each(config.surfaces, applicable, columns, bool(catalog))
    attributes = catalog_attributes(frame, checked) if frame is not None else None
    refreshes, full, rebuilt = [], checked, {}
    if config.incremental:
        refreshes, rebuilt = plan_refreshes(
            spark, checked, table, attributes, bases, index_root, version, run
        )
        full = [s for s in checked if s.name in rebuilt]
    planned = run.each(full, plan_surface, table, attributes, version, progress)
    run.lap("plan_s")
    built = build_all_shards(spark, planned, index_root, bases, progress) if planned else {}
    refreshed = refresh_shards(spark, refreshes, index_root, progress) if refreshes else {}
    run.lap("build_s")
    if attributes is not None:
        attributes.unpersist()
    summary = run.release(
        [plan for plan, _ in planned],
        built,
        [(p.surface, release_refresh(p, refreshed[p.surface.name], index_root, progress))
         for p in refreshes],
    )  # fmt: skip
    for name, reason in rebuilt.items():
        summary["surfaces"].get(name, {})["rebuilt_because"] = reason
    return summary


def plan_refreshes(
    spark: SparkSession,
    surfaces: list[Surface],
    table: DataFrame,
    attributes: DataFrame | None,
    bases: dict[str, Pointer],
    index_root: str,
    version: int,
    run: BuildRun,
) -> tuple[list[RefreshPlan], dict[str, str]]:
    """The refresh plan of each surface that can be refreshed, and the reason each other one
    is rebuilt."""
    plans, rebuilt = [], {}
    store = Store(index_root)
    for surface in surfaces:
        eligible = eligible_rows(table, surface, attributes)
        try:
            pointer = bases[surface.name]
            plans.append(plan_refresh(spark, surface, pointer, store, eligible, version))
        except Rebuild as exc:
            rebuilt[surface.name] = str(exc)
            run.progress(f"{surface.name}: rebuilt from scratch: {exc}")
            continue
        plan = plans[-1]
        touched = set(plan.added) | set(plan.removed)
        run.progress(
            f"{surface.name}: refreshing build {plan.base['build_id']}: {plan.lineage['new']} "
            f"products new, {plan.lineage['gone']} gone, {plan.lineage['changed']} changed, in "
            f"{len(touched)} of {len(plan.base['shards'])} shards"
        )
    return plans, rebuilt


def read_embeddings(
    spark: SparkSession, table_uri: str, version: int | None
) -> tuple[DataFrame, int]:
    """The embeddings table at `version` (default: the latest), and that version."""
    table, version = read_delta(spark, table_uri, version)
    if table is None:
        raise ItemSageError(f"{table_uri} is not a Delta table (run `itemsage embed` first)")
    return table, version


def referenced(columns: list[str], filters: list[str | None]) -> list[str]:
    """The columns named (as whole words, in any case, as Spark resolves them) in any of the
    filters."""
    text = " ".join(f for f in filters if f)
    return [
        c
        for c in columns
        if re.search(rf"(?<![\w.`]){re.escape(c)}(?![\w`])", text, re.IGNORECASE)
        or f"`{c.lower()}`" in text.lower()
    ]


def filtered(rows: DataFrame, surface: Surface, catalog_given: bool = True) -> DataFrame:
    """The rows that pass the surface's filter (lazily: Spark only analyses it here). A filter
    Spark cannot apply raises SurfaceFailure naming the columns there are and, for an unknown
    one, the nearest."""
    if not surface.filter:
        return rows
    try:
        return rows.where(surface.filter)
    except AnalysisException as exc:
        problem = str(exc).splitlines()[0]
        unknown = (exc.getMessageParameters() or {}).get("objectName")
        if (exc.getCondition() or "").startswith("UNRESOLVED_COLUMN") and unknown:
            problem = no_column(unknown.replace("`", ""), rows.columns)
            if not catalog_given:
                problem += " (pass --catalog to filter on its columns)"
        raise SurfaceFailure(
            f"filter {surface.filter!r} does not apply: {problem}; columns: "
            f"{', '.join(rows.columns)}"
        ) from None


def applicable(surface: Surface, rows: DataFrame, catalog_given: bool) -> Surface:
    """The surface, once its filter applies to `rows` (else SurfaceFailure)."""
    filtered(rows, surface, catalog_given)
    return surface


def catalog_attributes(catalog: DataFrame, surfaces: list[Surface]) -> DataFrame | None:
    """product_id and the catalog columns the surface filters use (None when they use none),
    cached for the several passes the planning makes. Ids on more than one row (repeated_ids)
    are left out: the embedding job never embeds them either."""
    needed = [
        c for c in referenced(catalog.columns, [s.filter for s in surfaces]) if c != PRODUCT_ID
    ]
    if not needed:
        return None
    attributes = without_repeated_ids(catalog.select(PRODUCT_ID, *needed))
    return attributes.persist(StorageLevel.MEMORY_AND_DISK)


def eligible_rows(
    table: DataFrame, surface: Surface, attributes: DataFrame | None, *extra: str
) -> DataFrame:
    """product_id, embedding, model_version (and the `extra` table columns) of the products the
    surface serves."""
    rows = table
    if attributes is not None and referenced(attributes.columns[1:], [surface.filter]):
        rows = table.join(attributes, PRODUCT_ID, "left")
    return filtered(rows, surface).select(
        PRODUCT_ID,
        "embedding",
        "model_version",
        # what a refresh compares (index_builder.shard_build.id_map): a 64-bit hash of the
        # product's content hash and model, the same wherever Spark computes it
        F.xxhash64("content_hash", "model_version").alias("content_key"),
        *extra,
    )


def plan_surface(
    surface: Surface,
    table: DataFrame,
    attributes: DataFrame | None,
    table_version: int,
    progress: Callable[[str], None],
) -> tuple[SurfacePlan, DataFrame]:
    """The surface's plan from its eligible products' counts, and those products packed by
    group (GROUPED rows): a hash bucket, or a part of the nearest k-means cluster."""
    rows = eligible_rows(table, surface, attributes)
    stats = (
        rows.groupBy("model_version")
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.min(F.size("embedding")).alias("low"),
            F.max(F.size("embedding")).alias("high"),
        )
        .collect()
    )
    plan = SurfacePlan.from_stats(surface, [r.asDict() for r in stats], table_version)
    if surface.sharding == "kmeans":
        return plan, kmeans_grouped(rows, plan, progress)
    buckets = plan.groups
    grouped = rows.mapInArrow(
        pack_groups(surface.name, lambda b: hash_groups(b.column(PRODUCT_ID), buckets)), GROUPED
    )
    progress(plan.describe())
    return plan, grouped


def kmeans_grouped(
    rows: DataFrame, plan: SurfacePlan, progress: Callable[[str], None]
) -> DataFrame:
    """The rows packed by k-means group: centroids trained on a bounded sample, each cluster's
    size counted on the executors, an oversized cluster split over several groups (tasks)."""
    sampled = rows.sample(fraction=plan.sample_fraction(), seed=plan.surface.seed)
    sample = vectors_of(sampled.select("embedding").toArrow().column("embedding"))
    centroids = plan.train_centroids(sample)

    def nearest(batch: pa.RecordBatch) -> np.ndarray:
        return nearest_centroids(vectors_of(batch.column("embedding")), centroids)[:, 0]

    def sizes(batches):
        for batch in batches:
            found, n = np.unique(nearest(batch), return_counts=True)
            yield pa.RecordBatch.from_pydict(
                {"group": pa.array(found, pa.int32()), "rows": pa.array(n, pa.int64())}
            )

    counts = {
        r["group"]: r["rows"]
        for r in rows.mapInArrow(sizes, "group int, rows long")
        .groupBy("group")
        .agg(F.sum("rows").alias("rows"))
        .collect()
    }
    clusters = plan.split_clusters(counts)
    progress(plan.describe(sampled=len(sample)))
    return rows.mapInArrow(
        pack_groups(
            plan.surface.name, lambda b: clusters.group_of(nearest(b), b.column(PRODUCT_ID))
        ),
        GROUPED,
    )


def _build_task(builds: dict[str, GroupBuild]):
    """One partition = one planned group of a surface: its shards, built with the task's cores
    and written into the build directory; one (surface, JSON entry) per shard."""

    def build(records):
        records = list(records)
        if not records:
            return
        (surface, group), _ = records[0]
        threads, attempt, scratch = task_slot()
        packed = [packed for _, packed in records]
        entries = builds[surface].build(
            group,
            packed,
            threads,
            scratch,
            lambda _: crash_point("between_shard_uploads"),
            attempt=attempt,
        )
        for entry in entries:
            yield surface, json.dumps(entry)

    return build


def build_all_shards(
    spark: SparkSession,
    planned: list[tuple[SurfacePlan, DataFrame]],
    index_root: str,
    bases: dict[str, Pointer],
    progress: Callable[[str], None],
) -> dict[str, list[dict]]:
    """Every group of every plan built by its own task, all in one Spark stage, and uploaded
    into the plan's new build directory (to be published only over its surface's pointer in
    `bases`); each surface's shard entries."""
    builds = {p.surface.name: p.start_build(index_root, bases[p.surface.name]) for p, _ in planned}
    grouped = functools.reduce(DataFrame.unionByName, [g for _, g in planned])
    # One partition per group, so that every group is built by its own task (hash partitioning
    # of the DataFrame API can put two groups in one task, which then builds them in turn).
    tasks = {
        (p.surface.name, g): i
        for i, (p, g) in enumerate((p, g) for p, _ in planned for g in range(p.groups))
    }
    with (
        stage_progress(spark, progress, "itemsage build-index: build shards"),
        spark_failures(
            "building the shards", "nothing published, every surface's current build stays"
        ),
    ):
        built = (
            grouped.rdd.map(
                lambda r: ((r["surface"], r["group"]), (bytes(r["products"]), bytes(r["vectors"])))
            )
            .partitionBy(len(tasks), lambda key: tasks[key])
            .mapPartitions(_build_task(builds))
            .collect()
        )
    entries = defaultdict(list)
    for surface, entry in built:
        entries[surface].append(json.loads(entry))
    return entries
