"""The catalog-embedding job: catalog Parquet -> validated rows -> encoder on executors -> Delta.

One pass over the catalog: each Spark task reads its Parquet row groups with pyarrow (or gets its
rows from Spark: an object-store catalog, an incremental run), checks them, embeds the valid ones
with the checkpoint (loaded once per Python worker), writes one embeddings file and one quarantine
file into the two tables' locations, and returns their descriptions. The driver then commits the
quarantine table (append) and the embeddings table (overwrite) in one transaction each, tagged with
the run id: a retried run commits nothing twice. Before committing, it sums the tasks' vocabulary
coverage counts into the run summary (`vocab_coverage`) and warns when the model knows too little
of the catalog's words (itemsage_core/features/vocab_coverage.py); it sums their counts of
extra-column values the column mapping could not convert (`conversions`) and prints a line per
column with failures.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import tempfile
import time
import zipfile
from pathlib import Path

import pyarrow as pa
from pyspark import SparkFiles, TaskContext
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from itemsage_core.contracts.catalog_check import checked_row_groups
from itemsage_core.contracts.catalog_contract import PRODUCT_ID
from itemsage_core.contracts.column_mapping import ColumnMapping, add_failures
from itemsage_core.contracts.validation_report import conversion_lines
from itemsage_core.embedding.batch_embedder import BatchEmbedder
from itemsage_core.embedding.content_hash import content_hashes
from itemsage_core.embedding.embed_task import REASON, embed_task, read_slices, row_group_slices
from itemsage_core.embedding.embeddings_table import (
    DEFAULT_MAX_QUARANTINE_SHARE,
    EMBEDDING_SCHEMA,
    NO_TABLE,
    QUARANTINE_SCHEMA,
    commit_files,
    committed_version,
    quarantine_uri,
    remove_tree,
    require_version,
    table_version,
    write_data_file,
)
from itemsage_core.errors import ItemSageError
from itemsage_core.features.vocab_coverage import (
    DEFAULT_MIN_COVERAGE,
    add_coverage,
    coverage_summary,
    low_coverage_warning,
)
from itemsage_core.model.checkpoint import CONFIG, read_checkpoint_manifest
from itemsage_core.storage.parquet_io import parquet_files
from itemsage_core.storage.uris import is_local_path
from jobs.catalog_frame import (
    catalog_ids,
    conversion_failures,
    raw_catalog,
    repeated_ids,
    repeated_ids_in_files,
    with_reasons,
)
from jobs.crash_points import crash_point
from jobs.delta_frame import read_delta
from jobs.progress import stage_progress
from jobs.spark_delta_writer import commit_with_spark, require_connector, staging_uri
from jobs.spark_failures import spark_failures

CONTENT_HASH, STATUS = "content_hash", "_status"
EMBED_STAGE = "itemsage embed: encode and write"  # the Spark UI's name of the main stage
_SHIPPED: set[tuple[int, str]] = set()
FILES_SCHEMA = (
    "kind string, path string, size long, rows long, modification_time long, "
    "stats string, coverage string, conversions string"
)


def default_run_id(
    catalog: str, model_version: str, mapping: ColumnMapping | None, incremental: bool = False
) -> str:
    """Same catalog files (path, size, mtime), model, mapping and mode: same run id."""
    digest = hashlib.sha256(f"{model_version}:{incremental}".encode())
    for path in parquet_files(catalog):
        stat = os.stat(path)
        digest.update(f"{os.path.abspath(path)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    digest.update(repr(mapping).encode())
    return "run-" + digest.hexdigest()[:16]


def _task_device() -> str:
    """The GPU Spark gave this task, else CUDA if visible, else CPU (inference.pick_device)."""
    from itemsage_core.model.inference import device_for_task

    context = TaskContext.get()
    gpus = context.resources().get("gpu") if context else None
    return device_for_task(list(gpus.addresses) if gpus else [])


def _embed_partition(
    model_name: str,
    model_version: str,
    targets: dict[str, str],
    run_id: str,
    started: dt.datetime,
    batch_size: int,
    precision: str,
    image_dim: int,
    mapping: ColumnMapping | None,
    repeated: pa.Table,
):
    """A Spark task running `embed_task` with the shipped checkpoint (loaded once per Python
    worker) on the task's device and CPUs. Its input is either checked catalog rows with a
    `reason` column (incremental mode) or raw catalog rows, mapped, conformed and checked in the
    same Python pass as the encoder, so the rows cross from the JVM to Python once."""

    def run(batches):
        import torch

        context = TaskContext.get()
        torch.set_num_threads(max(1, context.cpus() if context else 1))
        embedder = BatchEmbedder.for_model(
            SparkFiles.get(model_name),
            model_version,
            batch_size=batch_size,
            device=_task_device(),
            precision=precision,
        )
        described = embed_task(
            batches, embedder, targets, run_id, started, image_dim, mapping, repeated
        )
        if described:
            yield pa.RecordBatch.from_pylist(described)

    return run


def _embed_row_groups(embed_batches):
    """An RDD task over (file, row_group, start, stop) work items: it reads them with pyarrow,
    feeds the batches to `embed_batches` (an _embed_partition task) and yields its file
    descriptions. The catalog rows never pass through the JVM, whose Parquet-to-Arrow path for
    nested image vectors costs more than the encoder's tokeniser, and no SQL query is planned
    (the clip-retrieval reader pattern)."""

    def run(items):
        for described in embed_batches(read_slices(items)):
            yield from described.to_pylist()

    return run


def _write_partition(table_uri: str, run_id: str):
    """A task that writes its rows (already embeddings-table rows) as one data file (no
    coverage or conversions: they are not encoded or mapped again)."""

    def run(batches):
        tables = [pa.table(b) for b in batches]
        if tables and sum(t.num_rows for t in tables):
            rows = pa.concat_tables(tables).select(EMBEDDING_SCHEMA.names).cast(EMBEDDING_SCHEMA)
            yield pa.RecordBatch.from_pylist(
                [
                    {
                        "kind": "embeddings",
                        **write_data_file(table_uri, rows, run_id),
                        "coverage": None,
                        "conversions": None,
                    }
                ]
            )

    return run


def _with_hash(batches):
    for batch in batches:
        table = pa.table(batch)
        yield from table.append_column(CONTENT_HASH, content_hashes(table)).to_batches()


def _classify(checked: DataFrame, current: DataFrame, model_version: str) -> DataFrame:
    """Add `_status`: quarantine, new, changed (content or model differs) or unchanged."""
    schema = StructType([*checked.schema.fields, StructField(CONTENT_HASH, StringType())])
    hashed = checked.mapInArrow(_with_hash, schema)
    known = current.select(
        PRODUCT_ID,
        F.col(CONTENT_HASH).alias("_current_hash"),
        F.col("model_version").alias("_current_model"),
    )
    joined = hashed.join(known, PRODUCT_ID, "left")
    status = (
        F.when(F.col(REASON).isNotNull(), "quarantine")
        .when(F.col("_current_hash").isNull(), "new")
        .when(
            (F.col("_current_hash") != F.col(CONTENT_HASH))
            | (F.col("_current_model") != F.lit(model_version)),
            "changed",
        )
        .otherwise("unchanged")
    )
    return joined.withColumn(STATUS, status)


def _ship_model(spark: SparkSession, model_dir: str, model_version: str) -> str:
    """Send the checkpoint to every executor as an archive named after its version; returns the
    name under which SparkFiles finds it unpacked.

    Executors fetch it lazily, so the driver-side zip (a few MB in the temp dir) must outlive
    the session; the copy also protects the job from a model directory rewritten meanwhile.
    """
    name = f"{model_version}.zip"
    key = (id(spark.sparkContext), model_version)
    if key not in _SHIPPED:  # Spark refuses a second path under the same name
        archive = os.path.join(tempfile.mkdtemp(prefix="itemsage-model-"), name)
        # Stored, not deflated: the weights do not compress, and deflating them took ~4 s.
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as packed:
            for path in sorted(Path(model_dir).iterdir()):
                if path.is_file():
                    packed.write(path, path.name)
        spark.sparkContext.addArchive(archive)
        _SHIPPED.add(key)
    return name


def _commit(
    spark: SparkSession,
    writer: str,
    uris: dict[str, str],
    targets: dict[str, str],
    files: list[dict],
    run_id: str,
    summary: dict,
    read_version: int,
    max_quarantine_share: float,
) -> int:
    """Commit the quarantine files (append), then the embeddings (overwrite, one transaction),
    through the chosen writer; returns the embeddings table's new version. The embeddings are
    not committed when too much of the catalog was rejected (the quarantine still is, so the
    reasons can be read)."""
    bad = [f for f in files if f["kind"] == "quarantine"]
    good = [f for f in files if f["kind"] == "embeddings"]
    require_version(uris["embeddings"], read_version)  # another writer? before committing
    if writer == "deltalake":
        if bad:
            commit_files(
                uris["quarantine"],
                bad,
                QUARANTINE_SCHEMA,
                "append",
                run_id,
                {"run_id": run_id, "rows": summary["quarantined"]},
            )
        _check_quarantine_share(summary, max_quarantine_share)
        crash_point("before_commit")
        return commit_files(
            uris["embeddings"],
            good,
            EMBEDDING_SCHEMA,
            "overwrite",
            run_id,
            summary,
            read_version=read_version,
        )
    from deltalake import DeltaTable

    if bad and committed_version(uris["quarantine"], run_id) is None:
        commit_with_spark(
            spark,
            uris["quarantine"],
            targets["quarantine"],
            bad,
            QUARANTINE_SCHEMA,
            "append",
            run_id,
            {"run_id": run_id},
        )
    _check_quarantine_share(summary, max_quarantine_share)
    crash_point("before_commit")
    commit_with_spark(
        spark,
        uris["embeddings"],
        targets["embeddings"],
        good,
        EMBEDDING_SCHEMA,
        "overwrite",
        run_id,
        summary,
    )
    for staged in targets.values():
        remove_tree(staged)
    return DeltaTable(uris["embeddings"]).version()


def _check_quarantine_share(summary: dict, max_share: float) -> None:
    """Refuse to replace the table from a catalog that is empty or mostly rejected: the usual
    sign of a broken export, which would otherwise empty every index built from the table."""
    rows, rejected = summary["rows_in"], summary["quarantined"]
    if max_share >= 1 or (rows and rejected <= max_share * rows):
        return
    where = (
        f"; the reasons are in {summary['quarantine_table']} (run_id {summary['run_id']})"
        if rows
        else ""
    )
    what = (
        "the catalog has no rows"
        if not rows
        else f"{rejected} of {rows} rows ({rejected / rows:.0%}) were quarantined, more than "
        f"--max-quarantine-share {max_share:g}"
    )
    raise ItemSageError(
        f"{what}: {summary['table']} was left as it was{where}. Fix the catalog, or rerun with "
        "--max-quarantine-share 1 to commit anyway"
    )


def embed_catalog(
    spark: SparkSession,
    catalog: str,
    model_dir: str,
    table_uri: str,
    mapping: ColumnMapping | None = None,
    run_id: str | None = None,
    batch_size: int = 512,
    precision: str = "fp32",
    incremental: bool = False,
    writer: str = "deltalake",
    progress=print,
    max_quarantine_share: float = DEFAULT_MAX_QUARANTINE_SHARE,
    min_coverage: float = DEFAULT_MIN_COVERAGE,
) -> dict:
    """Run the job; returns the run summary (also recorded in the Delta commit's metadata).
    Warns through `progress` when the model's vocabulary knows less than `min_coverage` of the
    encoded rows' words."""
    timings, started = {}, time.perf_counter()
    manifest = read_checkpoint_manifest(model_dir)
    model_version = manifest["model_version"]
    image_dim = json.loads(Path(model_dir, CONFIG).read_text())["image_dim"]
    run_id = run_id or default_run_id(catalog, model_version, mapping, incremental)
    summary = {
        "run_id": run_id,
        "model_version": model_version,
        "catalog": catalog,
        "table": table_uri,
        "quarantine_table": quarantine_uri(table_uri),
    }
    done = committed_version(table_uri, run_id)
    if done is not None:
        progress(f"run {run_id} already committed {table_uri} at version {done}: nothing to do")
        return {**summary, "status": "already_committed", "table_version": done}

    if writer == "spark-delta":
        require_connector(spark)
    read_version = table_version(table_uri)
    groups = None
    if is_local_path(catalog):  # a local (or mounted) catalog
        groups = checked_row_groups(catalog, mapping)  # before Spark reads anything
    uris = {"embeddings": table_uri, "quarantine": quarantine_uri(table_uri)}
    targets = (
        uris if writer == "deltalake" else {k: staging_uri(u, run_id) for k, u in uris.items()}
    )
    shipped = _ship_model(spark, model_dir, model_version)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    left = (
        "nothing was committed"
        if read_version == NO_TABLE
        else f"nothing was committed, {table_uri} is still at version {read_version}"
    )
    with spark_failures("embedding job", left):
        # A local catalog's schema was checked from its footers, and its tasks read row groups
        # with pyarrow: it needs no Spark scan of its own.
        raw = raw_catalog(spark, catalog, mapping)[0] if groups is None else None
        if groups is not None and not incremental:
            ids, repeated = None, repeated_ids_in_files(spark, groups, mapping)
        else:
            ids = catalog_ids(spark, catalog, mapping)
            repeated = repeated_ids(ids)
        to_encode, carried = None, None  # None: every catalog row
        if incremental:
            checked = with_reasons(spark, catalog, mapping, repeated, image_dim)
            current, version = read_delta(spark, table_uri)
            if current is not None:
                read_version = version
                classified = _classify(checked, current, model_version)
                counts = {
                    r[STATUS]: r["count"] for r in classified.groupBy(STATUS).count().collect()
                }
                before = current.count()
                summary["incremental"] = {
                    "read_version": read_version,
                    **{k: counts.get(k, 0) for k in ("new", "changed", "unchanged")},
                    "removed": before - counts.get("changed", 0) - counts.get("unchanged", 0),
                }
                progress(f"incremental from version {read_version}: {summary['incremental']}")
                to_encode = classified.where(F.col(STATUS) != "unchanged").select(*checked.columns)
                carried = current.join(
                    classified.where(F.col(STATUS) == "unchanged").select(PRODUCT_ID),
                    PRODUCT_ID,
                    "left_semi",
                )
        progress(
            f"embedding {catalog} with {model_version} (run {run_id}) on "
            f"{spark.sparkContext.master}"
        )
        task = _embed_partition(
            shipped,
            model_version,
            targets,
            run_id,
            now,
            batch_size,
            precision,
            image_dim,
            mapping,
            repeated,
        )
        crash_point("before_write")
        with stage_progress(spark, progress, EMBED_STAGE):
            if to_encode is None and groups is not None:
                items = row_group_slices(groups, spark.sparkContext.defaultParallelism)
                files = (
                    spark.sparkContext.parallelize(items, max(1, len(items)))
                    .mapPartitions(_embed_row_groups(task))
                    .collect()
                )
            else:
                files = [
                    r.asDict()
                    for r in (raw if to_encode is None else to_encode)
                    .mapInArrow(task, FILES_SCHEMA)
                    .collect()
                ]
        kept = 0
        if carried is not None:
            carried_files = [
                r.asDict()
                for r in carried.mapInArrow(
                    _write_partition(targets["embeddings"], run_id), FILES_SCHEMA
                ).collect()
            ]
            kept = sum(f["rows"] for f in carried_files)
            files += carried_files
        rows_in = (
            sum(n for *_, n in groups)
            if groups is not None
            else spark.read.parquet(catalog).count()
        )
        if to_encode is not None and mapping is not None:  # the tasks got checked rows
            conversions = conversion_failures(spark, catalog, mapping)
        else:  # the tasks mapped the raw rows and counted
            conversions = {}
            for f in files:
                if f["conversions"]:
                    add_failures(conversions, json.loads(f["conversions"]))
    embedded = sum(f["rows"] for f in files if f["kind"] == "embeddings") - kept
    quarantined = sum(f["rows"] for f in files if f["kind"] == "quarantine")
    timings["embed_and_write_s"] = time.perf_counter() - started
    summary.update(
        {
            "rows_in": rows_in,
            "embedded": embedded,
            "carried_over": kept,
            "quarantined": quarantined,
            "counts_add_up": rows_in == embedded + kept + quarantined,
        }
    )
    if not summary["counts_add_up"]:
        raise RuntimeError(f"row counts do not add up: {summary}")  # never commit a loss
    coverage = {}  # the encoded rows' counts (carried-over rows have none)
    for f in files:
        if f["coverage"]:
            add_coverage(coverage, json.loads(f["coverage"]))
    summary["vocab_coverage"] = coverage_summary(coverage, min_coverage)
    summary["conversions"] = conversions
    for line in conversion_lines(conversions):
        progress(line)
    warning = low_coverage_warning(summary["vocab_coverage"], model_version)
    if warning:
        progress(warning)

    crash_point("after_write")
    summary.update(
        {
            "writer": writer,
            "seconds": timings,
            "products_per_s": embedded / max(timings["embed_and_write_s"], 1e-9),
        }
    )
    commit_started = time.perf_counter()
    version = _commit(
        spark, writer, uris, targets, files, run_id, summary, read_version, max_quarantine_share
    )
    timings["commit_s"] = time.perf_counter() - commit_started
    timings["total_s"] = time.perf_counter() - started
    summary.update({"status": "committed", "table_version": version})
    progress(
        f"committed {embedded} embeddings to {table_uri} (version {version}); "
        f"{quarantined} rows quarantined; {summary['products_per_s']:.0f} products/s"
    )
    return summary
