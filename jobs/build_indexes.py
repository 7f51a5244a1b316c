"""The index-building job: a pinned version of the embeddings table -> each surface's eligible
products -> groups (hash buckets or k-means clusters) -> one Spark task per group builds its
hnswlib shards (a group over the target size is cut into several) -> recall gate -> manifest ->
atomic publish.

The driver plans (counts; k-means centroids from a bounded sample, the only vectors it sees)
and publishes (manifest, CURRENT). Executors write shard files straight into the new
build directory, so INDEX_ROOT must be a path the driver and every executor see (local disk in
local mode; a shared mount on a cluster). A surface that cannot be built (SurfaceFailure: its
filter does not apply or matches nothing, its recall gate fails, ...) publishes nothing and keeps
its current build; the others still publish. docs/indexes.md has the layout and the config.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import shutil
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark import StorageLevel, TaskContext
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from index_builder.build_release import assemble_manifest, release_build
from index_builder.layout import CENTROIDS, build_dir, current_build_id, new_build_id
from index_builder.partitioning import (
    ClusterPlan,
    hash_groups,
    nearest_centroids,
    routing_recall,
    train_centroids,
)
from index_builder.shard_build import ShardParams, build_group
from index_builder.surfaces import Surface
from itemsage_core.contracts.catalog_contract import IMAGE_EMBEDDINGS, PRODUCT_ID
from itemsage_core.contracts.column_mapping import ColumnMapping
from itemsage_core.errors import ItemSageError
from itemsage_core.storage.arrow_ipc import from_ipc, to_ipc
from itemsage_core.storage.uris import absolute_uri
from jobs.catalog_frame import read_catalog
from jobs.delta_frame import read_delta
from jobs.progress import stage_progress
from jobs.spark_failures import spark_failures

# Vectors travel from the grouping step to the build tasks as raw float32 bytes (one value for
# Spark to copy, and the build task joins them into one matrix without a per-float step).
GROUPED = "surface string, group int, products binary, vectors binary"


class SurfaceFailure(ItemSageError):
    """A surface that cannot be built or published (the others still are): the reason, and the
    details its summary entry keeps beside it."""

    def __init__(self, reason: str, details: dict | None = None):
        super().__init__(reason)
        self.details = details or {}


def vectors_of(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A list<float> column of equal-length vectors as an (n, dim) float32 matrix."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    flat = pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(len(column), -1) if len(column) else flat.reshape(0, 0)


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
            unknown = unknown.replace("`", "")
            names = {c.lower(): c for c in rows.columns}
            nearest = difflib.get_close_matches(unknown.lower(), names, n=1)
            problem = f"no column {unknown}" + (
                f" (nearest: {names[nearest[0]]})" if nearest else ""
            )
            if not catalog_given:
                problem += " (pass --catalog to filter on its columns)"
        raise SurfaceFailure(
            f"filter {surface.filter!r} does not apply: {problem}; columns: "
            f"{', '.join(rows.columns)}"
        ) from None


def catalog_attributes(catalog: DataFrame, surfaces: list[Surface]) -> DataFrame | None:
    """product_id and the catalog columns the surface filters use (None when they use none),
    cached for the several passes the planning makes. Ids on more than one row are left out
    (the embedding job never embeds them either)."""
    needed = [
        c for c in referenced(catalog.columns, [s.filter for s in surfaces]) if c != PRODUCT_ID
    ]
    if not needed:
        return None
    attributes = catalog.select(PRODUCT_ID, *needed)
    repeated = attributes.groupBy(PRODUCT_ID).count().where(F.col("count") > 1)
    return attributes.join(repeated.select(PRODUCT_ID), PRODUCT_ID, "left_anti").persist(
        StorageLevel.MEMORY_AND_DISK
    )


def eligible_rows(table: DataFrame, surface: Surface, attributes: DataFrame | None) -> DataFrame:
    """product_id, embedding, model_version of the products the surface serves."""
    rows = table
    if attributes is not None and referenced(attributes.columns[1:], [surface.filter]):
        rows = table.join(attributes, PRODUCT_ID, "left")
    return filtered(rows, surface).select(PRODUCT_ID, "embedding", "model_version")


@dataclasses.dataclass
class SurfacePlan:
    surface: Surface
    build_id: str
    products: int
    dim: int
    model_version: str
    grouped: DataFrame  # surface, group, product_id, vector (bytes)
    groups: int
    group_clusters: list[int] | None = None  # k-means: the cluster of each group
    centroids: np.ndarray | None = None
    routing_recall: float | None = None  # k-means: share of top-10 in the routed clusters


def _grouped(name: str, groups):
    """A mapInArrow function putting each row in its group (`groups(batch)`): one output row
    per group present in a batch, its product ids as Arrow IPC bytes and its vectors as one
    float32 blob, so the shuffle moves a few large values instead of a Python row per product."""

    def assign(batches):
        for batch in batches:
            assigned = np.asarray(groups(batch))
            vectors = vectors_of(batch.column("embedding"))
            present = np.unique(assigned)
            chosen = [np.flatnonzero(assigned == g) for g in present]
            yield pa.RecordBatch.from_pydict(
                {
                    "surface": pa.array([name] * len(present), pa.string()),
                    "group": pa.array(present, pa.int32()),
                    "products": pa.array(
                        [
                            to_ipc(
                                pa.table(
                                    {PRODUCT_ID: batch.column(PRODUCT_ID).take(pa.array(rows))}
                                )
                            )
                            for rows in chosen
                        ],
                        pa.binary(),
                    ),
                    "vectors": pa.array(
                        [
                            np.ascontiguousarray(vectors[rows], np.float32).tobytes()
                            for rows in chosen
                        ],
                        pa.binary(),
                    ),
                }
            )

    return assign


def plan_surface(
    rows: DataFrame, surface: Surface, table_version: int, progress: Callable[[str], None]
) -> SurfacePlan:
    """Count the surface's products, check they share one model and dimension, and put each in
    a group: a hash bucket, or a part of its nearest k-means cluster (centroids trained on a
    bounded sample; an oversized cluster is split over several groups, i.e. several tasks)."""
    stats = (
        rows.groupBy("model_version")
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.min(F.size("embedding")).alias("low"),
            F.max(F.size("embedding")).alias("high"),
        )
        .collect()
    )
    if not stats:
        raise SurfaceFailure(
            f"no products after the filter {surface.filter!r}"
            if surface.filter
            else "no products in the table"
        )
    if len(stats) > 1:
        raise SurfaceFailure(
            f"the table mixes model versions "
            f"{sorted(r['model_version'] for r in stats)}; their vectors are not "
            "comparable, re-embed the catalog with one model"
        )
    (row,) = stats
    if row["low"] != row["high"]:
        raise SurfaceFailure(f"embeddings of {row['low']} to {row['high']} dimensions in one table")
    products = row["n"]
    plan = SurfacePlan(
        surface,
        new_build_id(table_version),
        products,
        row["high"],
        row["model_version"],
        rows,
        surface.shard_count(products),
    )
    if surface.sharding == "hash":
        buckets = plan.groups
        plan.grouped = rows.mapInArrow(
            _grouped(surface.name, lambda b: hash_groups(b.column(PRODUCT_ID), buckets)), GROUPED
        )
        progress(f"{surface.name}: {products} products in {buckets} hash groups")
        return plan
    fraction = min(1.0, surface.kmeans_sample / products)
    sample = rows.sample(fraction=fraction, seed=surface.seed).select("embedding").toArrow()
    centroids = train_centroids(vectors_of(sample.column("embedding")), plan.groups, surface.seed)

    def nearest(batch):
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
    clusters = ClusterPlan.from_counts(counts, len(centroids), surface.target_shard_size)
    plan.grouped = rows.mapInArrow(
        _grouped(surface.name, lambda b: clusters.group_of(nearest(b), b.column(PRODUCT_ID))),
        GROUPED,
    )
    plan.centroids, plan.group_clusters = centroids, clusters.cluster_of_group()
    plan.groups = clusters.groups
    plan.routing_recall = routing_recall(
        vectors_of(sample.column("embedding")),
        centroids,
        surface.probe_clusters,
        1000,
        surface.query_noise,
        surface.seed,
    )
    progress(
        f"{surface.name}: {products} products in {len(centroids)} k-means clusters "
        f"(trained on {sample.num_rows} vectors), {plan.groups} groups; routing to "
        f"{surface.probe_clusters} clusters keeps {plan.routing_recall:.3f} of the top 10"
    )
    return plan


def _build_task(
    params: dict[str, ShardParams],
    sizes: dict[str, int],
    dims: dict[str, int],
    directories: dict[str, str],
):
    """One partition = one planned group of a surface: its shards, built with the task's cores
    and written into the build directory; one (surface, JSON entry) per shard."""

    def build(records):
        records = list(records)
        if not records:
            return
        (surface, group), _ = records[0]
        context = TaskContext.get()
        threads = max(1, context.cpus() if context else 1)
        ids = (
            pa.concat_tables([from_ipc(p) for _, (p, _) in records])
            .column(PRODUCT_ID)
            .combine_chunks()
        )
        vectors = np.frombuffer(b"".join(v for _, (_, v) in records), np.float32).reshape(
            len(ids), dims[surface]
        )
        for entry in build_group(
            ids, vectors, group, sizes[surface], directories[surface], params[surface], threads
        ):
            yield surface, json.dumps(entry)

    return build


def build_shards(
    spark: SparkSession, plans: list[SurfacePlan], index_root: str, progress: Callable[[str], None]
) -> list[tuple[str, dict]]:
    """Every group of every plan built by its own task, all in one Spark stage, into the plan's
    new build directory; (surface, shard entry) per shard."""
    directories = {}
    for plan in plans:
        directory = build_dir(index_root, plan.surface.name, plan.build_id)
        directory.mkdir(parents=True)
        directories[plan.surface.name] = str(directory)
        if plan.centroids is not None:
            np.save(directory / CENTROIDS, plan.centroids, allow_pickle=False)
    params = {
        p.surface.name: ShardParams(
            p.surface.M,
            p.surface.ef_construction,
            p.surface.ef_search,
            p.surface.recall_queries,
            p.surface.query_noise,
            p.surface.seed,
        )
        for p in plans
    }
    sizes = {p.surface.name: p.surface.target_shard_size for p in plans}
    grouped = plans[0].grouped
    for plan in plans[1:]:
        grouped = grouped.unionByName(plan.grouped)
    # One partition per group, so that every group is built by its own task (hash partitioning
    # of the DataFrame API can put two groups in one task, which then builds them in turn).
    tasks = {
        (p.surface.name, g): i
        for i, (p, g) in enumerate((p, g) for p in plans for g in range(p.groups))
    }
    task = _build_task(params, sizes, {p.surface.name: p.dim for p in plans}, directories)
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
            .mapPartitions(task)
            .collect()
        )
    return [(surface, json.loads(entry)) for surface, entry in built]


def publish_plan(
    plan: SurfacePlan,
    entries: list[dict],
    index_root: str,
    progress: Callable[[str], None],
    **provenance,
) -> dict:
    """The plan's manifest from its shards' entries, then publish past the recall gate; the
    release result, or SurfaceFailure with the build deleted."""
    name = plan.surface.name
    directory = build_dir(index_root, name, plan.build_id)
    manifest = assemble_manifest(
        plan.surface,
        plan.build_id,
        directory,
        entries,
        model_version=plan.model_version,
        dim=plan.dim,
        group_clusters=plan.group_clusters,
        routing_recall=plan.routing_recall,
        **provenance,
    )
    if manifest["products"] != plan.products:
        shutil.rmtree(directory)
        raise SurfaceFailure(
            f"shards hold {manifest['products']} products, {plan.products} were eligible"
        )
    result = release_build(index_root, plan.surface, directory, manifest)
    if result["status"] != "published":
        raise SurfaceFailure(result["reason"], result)
    recall = manifest["recall_at_10"]
    progress(
        f"{name}: published build {plan.build_id}: {plan.products} products in "
        f"{result['shards']} shards, recall@10 min {recall['min']:.3f} "
        f"mean {recall['mean']:.3f}"
    )
    return result


def build_indexes(
    spark: SparkSession,
    table_uri: str,
    surfaces: list[Surface],
    index_root: str,
    catalog: str | None = None,
    mapping: ColumnMapping | None = None,
    table_version: int | None = None,
    progress=print,
) -> dict:
    """Build, gate and publish every surface that can be; returns the run summary. A surface
    that cannot be (SurfaceFailure) is `failed` there with its `reason` and `current_build`: it
    publishes nothing and its current build stays; the others still publish. Every filter is
    checked before any surface is planned."""
    started = time.perf_counter()
    table_uri, catalog = absolute_uri(table_uri), catalog and absolute_uri(catalog)
    table, version = read_delta(spark, table_uri, table_version)
    if table is None:
        raise ItemSageError(f"{table_uri} is not a Delta table (run `itemsage embed` first)")
    progress(f"building {', '.join(s.name for s in surfaces)} from {table_uri} version {version}")
    summary = {
        "table": table_uri,
        "table_version": version,
        "index_root": index_root,
        "surfaces": {},
    }

    def attempt(surface: Surface, step: Callable[..., object], *args, **kwargs):
        """step(*args, **kwargs), or None when the surface fails (recorded in the summary)."""
        try:
            return step(*args, **kwargs)
        except SurfaceFailure as exc:
            current = current_build_id(index_root, surface.name)
            progress(
                f"{surface.name}: FAILED: {exc}; nothing published, "
                + (f"build {current} stays current" if current else "no build is current")
            )
            summary["surfaces"][surface.name] = {
                **exc.details,
                "status": "failed",
                "reason": str(exc),
                "current_build": current,
            }
            return None

    frame = read_catalog(spark, catalog, mapping).drop(IMAGE_EMBEDDINGS) if catalog else None
    columns = table if frame is None else table.join(frame, PRODUCT_ID, "left")
    checked = [s for s in surfaces if attempt(s, filtered, columns, s, bool(catalog)) is not None]
    attributes = catalog_attributes(frame, checked) if frame is not None else None
    plans = [
        plan
        for plan in (
            attempt(
                s,
                lambda s: plan_surface(eligible_rows(table, s, attributes), s, version, progress),
                s,
            )
            for s in checked
        )
        if plan is not None
    ]
    planned = time.perf_counter()
    built = build_shards(spark, plans, index_root, progress) if plans else []
    finished = time.perf_counter()
    if attributes is not None:
        attributes.unpersist()
    provenance = {
        "table_uri": table_uri,
        "table_version": version,
        "catalog": catalog,
        "seconds": {"plan_s": planned - started, "build_s": finished - planned},
    }
    for plan in plans:
        entries = [entry for surface, entry in built if surface == plan.surface.name]
        result = attempt(
            plan.surface, publish_plan, plan, entries, index_root, progress, **provenance
        )
        if result is not None:
            summary["surfaces"][plan.surface.name] = result
    summary["seconds"] = time.perf_counter() - started
    return summary
