"""The featurize job: catalog Parquet -> checked rows -> sentence embeddings on executors -> OUT.

A recipe of reader -> mapper -> writer, as jobs/embed_catalog.py. A reader (jobs/catalog_readers.py:
a local catalog's row groups, or a Spark scan of an object-store one) gives the Spark tasks their
raw rows; each task runs `featurize_task` (itemsage_core/embedding/featurize_run.py) with the
sentence-transformers model (a local folder shipped to the executors as an archive, or a URI each
machine fetches once into its cache; loaded once per Python worker, on the task's GPU when Spark
gives it one): it maps and checks the rows, embeds each valid row's text (or reuses the vector of
the same text from the previous OUT, same model and features) and writes one data file and one
quarantine file into a staging sibling of OUT. The driver sums the tasks' file descriptions into
the summary, writes OUT/mapping.toml and OUT/_featurize.json, and only then moves the staging
directory into place: a failed or killed run leaves the previous OUT as it was.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import shutil
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

import pyarrow as pa
from pyspark import SparkFiles
from pyspark.sql import SparkSession

from itemsage_core.embedding.featurize_run import (
    MANIFEST,
    MAPPING_FILE,
    FeaturizeConfig,
    PreviousVectors,
    check_out,
    check_quarantine_share,
    featurize_task,
    manifest,
    mapped_columns,
    mapping_text,
    previous_vectors,
    publish,
    run_totals,
    staging_dir,
    summary_line,
)
from itemsage_core.errors import ItemSageError
from itemsage_core.features.sentence_text import (
    INSTALL_FIX,
    SentenceEncoder,
    check_features,
    default_features,
    fetch_model,
    model_files,
    model_identity,
)
from itemsage_core.storage.files import write_atomic
from itemsage_core.storage.parquet_io import parquet_files, read_schema
from itemsage_core.storage.uris import is_local_path
from jobs.catalog_readers import whole_catalog_reader
from jobs.parquet_frame import arrow_reads, parquet_frame
from jobs.progress import stage_progress
from jobs.spark_failures import spark_failures
from jobs.spark_session import task_device, task_slot

FEATURIZE_STAGE = "itemsage featurize: encode and write"  # the Spark UI's name of the stage
# A task's file descriptions, as catalog_readers.FILES_SCHEMA (the readers' mapInArrow schema).
FILES_ARROW_SCHEMA = pa.schema(
    [
        ("kind", pa.string()),
        ("path", pa.string()),
        ("size", pa.int64()),
        ("rows", pa.int64()),
        ("modification_time", pa.int64()),
        ("stats", pa.string()),
        ("coverage", pa.string()),
        ("conversions", pa.string()),
    ]
)
_SHIPPED: set[tuple[int, str]] = set()


def _ship_folder(spark: SparkSession, folder: Path, identity: str) -> str:
    """Send a local model folder (with its sub-folders) to every executor as an archive named
    after its identity; returns the name SparkFiles finds it under. The zip is kept in the
    temporary directory, one per identity, and reused by later runs."""
    name = f"itemsage-text-{identity[:16]}.zip"
    key = (id(spark.sparkContext), name)
    if key not in _SHIPPED:  # Spark refuses a second path under the same name
        archive = Path(tempfile.gettempdir()) / "itemsage-text-models" / name
        if not archive.is_file():
            archive.parent.mkdir(parents=True, exist_ok=True)
            partial = archive.with_name(f".{name}.{uuid.uuid4().hex}")
            # Stored, not deflated: the weights do not compress.
            with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as packed:
                for path in sorted(folder.rglob("*")):
                    if path.is_file():
                        packed.write(path, path.relative_to(folder).as_posix())
            os.replace(partial, archive)
        spark.sparkContext.addArchive(str(archive))
        _SHIPPED.add(key)
    return name


def _catalog_schema(spark: SparkSession, catalog: str) -> pa.Schema:
    """The raw catalog's schema (the first file's footer, where pyarrow reads the catalog)."""
    if is_local_path(catalog) or arrow_reads(spark, catalog):
        return read_schema(parquet_files(catalog)[0])
    return parquet_frame(spark, catalog).limit(0).toArrow().schema


def _features(config: FeaturizeConfig, columns: list[str]) -> list[str]:
    """--features checked against the mapped catalog, else default_features."""
    features = check_features(config.features) if config.features else default_features(columns)
    missing = [f for f in features if f not in columns]
    if missing:
        raise ItemSageError(
            f"--features: {', '.join(missing)} not in the catalog after the column mapping "
            f"(it has {', '.join(default_features(columns))}); map it, or leave it out"
        )
    return features


def _featurize_partition(
    config: FeaturizeConfig,
    features: list[str],
    shipped: str | None,
    identity: str,
    repeated: pa.Table,
    previous: PreviousVectors | None,
    target: str,
    run_id: str,
    started: dt.datetime,
):
    """The job's task: `featurize_task` with the model (shipped, or fetched from its URI into
    the machine's cache; loaded when a text must be encoded, once per Python worker) on the
    task's device and CPUs."""
    source = config.text_model

    def load() -> SentenceEncoder:
        import torch

        torch.set_num_threads(task_slot()[0])
        folder = SparkFiles.get(shipped) if shipped else fetch_model(source, identity)
        return SentenceEncoder.load(folder, identity, task_device())

    def run(batches):
        described = featurize_task(
            batches, load, config, features, repeated, previous, target, run_id, started
        )
        if described:
            yield pa.RecordBatch.from_pylist(described, schema=FILES_ARROW_SCHEMA)

    return run


def featurize(spark: SparkSession, config: FeaturizeConfig, progress=print) -> dict:
    """Run the job; returns its summary (also in OUT/_featurize.json)."""
    started = time.perf_counter()
    if importlib.util.find_spec("sentence_transformers") is None:
        raise ItemSageError(f"itemsage featurize needs sentence-transformers: {INSTALL_FIX}")
    out = check_out(config.out)
    folder = fetch_model(config.text_model)
    checksums = model_files(folder)
    identity = model_identity(checksums)
    features = _features(
        config, mapped_columns(_catalog_schema(spark, config.catalog), config.mapping)
    )
    previous, why = previous_vectors(out, identity, features)
    shipped = _ship_folder(spark, folder, identity) if is_local_path(config.text_model) else None
    stamp = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    run_id = f"featurize-{stamp:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    summary = {
        "run_id": run_id,
        "catalog": config.catalog,
        "mapping": config.mapping_path,
        "out": str(out),
        "text_model": config.text_model,
        "model_sha256": identity,
        "features": features,
        "previous": why,
    }
    staging = staging_dir(out)
    try:
        with spark_failures("featurize job", f"{out} was left as it was"):
            reader = whole_catalog_reader(spark, config, 0)
            repeated = reader.repeated_ids()
            master = spark.sparkContext.master
            progress(
                f"featurizing {config.catalog} ({', '.join(features)}) with text model "
                f"{identity[:12]} on {master}; previous vectors: {why}"
            )
            task = _featurize_partition(
                config, features, shipped, identity, repeated, previous, str(staging), run_id, stamp
            )
            with stage_progress(spark, progress, FEATURIZE_STAGE):
                files = reader.embed(task)
            rows_in = reader.rows_in()
        summary.update(run_totals(files, rows_in))
        check_quarantine_share(summary, config.max_quarantine_share)
        if summary["dim"] is None:  # no valid row: the model says its dimension
            summary["dim"] = SentenceEncoder.load(folder, identity).dim
        seconds = time.perf_counter() - started
        summary["seconds"] = {"total_s": seconds}
        summary["products_per_s"] = summary["featurized"] / max(seconds, 1e-9)
        write_atomic(staging / MAPPING_FILE, mapping_text(config.mapping_path, summary["dim"]))
        described = manifest(summary, checksums, files)
        write_atomic(staging / MANIFEST, json.dumps(described, indent=2, sort_keys=True) + "\n")
        publish(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    progress(summary_line(summary))
    return summary
