"""The catalog-embedding job: catalog Parquet -> validated rows -> encoder on executors -> Delta.

One pass over the catalog: each Spark task checks its rows (with_reasons), embeds the valid ones
with the checkpoint (loaded once per Python worker), writes one embeddings file and one
quarantine file into the two tables' locations, and returns their descriptions. The driver then
commits the quarantine table (append) and the embeddings table (overwrite) in one transaction
each, tagged with the run id: a retried run commits nothing twice.

spark-submit entry point (`spark-submit.sh embed ...` runs `itemsage embed ...`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import sys
import time

import pyarrow as pa
import pyarrow.compute as pc
from pyspark import SparkFiles, TaskContext
from pyspark.sql import SparkSession

from itemsage_core.batch_embedder import BatchEmbedder, quarantine_rows
from itemsage_core.checkpoint import read_manifest
from itemsage_core.column_mapping import ColumnMapping
from itemsage_core.embeddings_table import (EMBEDDING_SCHEMA, QUARANTINE_SCHEMA, commit_files,
                                            committed_version, quarantine_uri, write_data_file)
from itemsage_core.parquet_io import parquet_files
from jobs.catalog_frame import REASON, read_catalog, with_reasons

FILES_SCHEMA = ("kind string, path string, size long, rows long, modification_time long, "
                "stats string")


def default_run_id(catalog: str, model_version: str, mapping: ColumnMapping | None) -> str:
    """Same catalog files (path, size, mtime), model and mapping: same run id."""
    digest = hashlib.sha256(model_version.encode())
    for path in parquet_files(catalog):
        stat = os.stat(path)
        digest.update(f"{os.path.abspath(path)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    digest.update(repr(mapping).encode())
    return "run-" + digest.hexdigest()[:16]


def _task_device() -> str:
    """The GPU Spark gave this task, else CUDA if visible, else CPU (inference.pick_device)."""
    from itemsage_core.inference import device_for_task

    context = TaskContext.get()
    gpus = context.resources().get("gpu") if context else None
    return device_for_task(list(gpus.addresses) if gpus else [])


def _embed_partition(model_name: str, model_version: str, table_uri: str, run_id: str,
                     started: dt.datetime, batch_size: int, precision: str):
    def run(batches):
        import torch

        context = TaskContext.get()
        torch.set_num_threads(max(1, context.cpus() if context else 1))
        embedder = BatchEmbedder.for_model(SparkFiles.get(model_name), model_version,
                                           batch_size=batch_size, device=_task_device(),
                                           precision=precision)
        good, bad = [], []
        for batch in batches:
            table = pa.table(batch)
            reasons = table.column(REASON)
            table = table.drop_columns([REASON])
            ok = pc.is_null(reasons)
            if pc.any(ok).as_py():
                good.append(embedder.embed(table.filter(ok), run_id, started))
            if not pc.all(ok).as_py():
                bad.append(quarantine_rows(table.filter(pc.invert(ok)),
                                           reasons.filter(pc.invert(ok)), run_id, started))
        described = []
        if good:
            described.append({"kind": "embeddings", **write_data_file(
                table_uri, pa.concat_tables(good), run_id)})
        if bad:
            described.append({"kind": "quarantine", **write_data_file(
                quarantine_uri(table_uri), pa.concat_tables(bad), run_id)})
        if described:
            yield pa.RecordBatch.from_pylist(described)
    return run


def embed_catalog(spark: SparkSession, catalog: str, model_dir: str, table_uri: str,
                  mapping: ColumnMapping | None = None, run_id: str | None = None,
                  batch_size: int = 512, precision: str = "auto", progress=print) -> dict:
    """Run the job; returns the run summary (also recorded in the Delta commit's metadata)."""
    timings, started = {}, time.perf_counter()
    manifest = read_manifest(model_dir)
    model_version = manifest["model_version"]
    image_dim = json.loads(open(os.path.join(model_dir, "config.json")).read())["image_dim"]
    run_id = run_id or default_run_id(catalog, model_version, mapping)
    summary = {"run_id": run_id, "model_version": model_version, "catalog": catalog,
               "table": table_uri, "quarantine_table": quarantine_uri(table_uri)}
    done = committed_version(table_uri, run_id)
    if done is not None:
        progress(f"run {run_id} already committed {table_uri} at version {done}: nothing to do")
        return {**summary, "status": "already_committed", "table_version": done}

    spark.sparkContext.addFile(os.path.abspath(model_dir), recursive=True)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    checked = with_reasons(read_catalog(spark, catalog, mapping), image_dim)
    progress(f"embedding {catalog} with {model_version} (run {run_id}) on "
             f"{spark.sparkContext.master}")
    task = _embed_partition(os.path.basename(os.path.abspath(model_dir)), model_version,
                            table_uri, run_id, now, batch_size, precision)
    files = [r.asDict() for r in checked.mapInArrow(task, FILES_SCHEMA).collect()]
    timings["embed_and_write_s"] = time.perf_counter() - started
    embedded = sum(f["rows"] for f in files if f["kind"] == "embeddings")
    quarantined = sum(f["rows"] for f in files if f["kind"] == "quarantine")
    rows_in = spark.read.parquet(catalog).count()
    summary.update({"rows_in": rows_in, "embedded": embedded, "quarantined": quarantined,
                    "counts_add_up": rows_in == embedded + quarantined})
    if not summary["counts_add_up"]:
        raise RuntimeError(f"row counts do not add up: {summary}")  # never commit a loss

    commit_started = time.perf_counter()
    bad_files = [f for f in files if f["kind"] == "quarantine"]
    if bad_files:
        commit_files(quarantine_uri(table_uri), bad_files, QUARANTINE_SCHEMA, "append", run_id,
                     {"run_id": run_id, "rows": quarantined})
    timings["commit_s"] = time.perf_counter() - commit_started
    timings["total_s"] = time.perf_counter() - started
    summary.update({"seconds": timings,
                    "products_per_s": embedded / max(timings["embed_and_write_s"], 1e-9)})
    version = commit_files(table_uri, [f for f in files if f["kind"] == "embeddings"],
                           EMBEDDING_SCHEMA, "overwrite", run_id, summary)
    summary.update({"status": "committed", "table_version": version})
    progress(f"committed {embedded} embeddings to {table_uri} (version {version}); "
             f"{quarantined} rows quarantined; {summary['products_per_s']:.0f} products/s")
    return summary


def main(argv: list[str] | None = None) -> None:
    from itemsage_cli.main import cli

    cli(["embed", *(sys.argv[1:] if argv is None else argv)], prog_name="itemsage")


if __name__ == "__main__":
    main()
