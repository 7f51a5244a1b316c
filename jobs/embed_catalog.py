"""The catalog-embedding job: catalog Parquet -> validated rows -> encoder on executors -> Delta.

A recipe of reader -> mapper -> writer. A reader (jobs/catalog_readers.py: a local catalog's row
groups, a Spark scan, or an incremental run's changed rows) gives the Spark tasks their rows; each
task runs `embed_task` (itemsage_core/embedding/embed_task.py) with the checkpoint (shipped once,
loaded once per Python worker): it checks the rows, embeds the valid ones, and writes one
embeddings file and one quarantine file into the tables' locations. The driver sums the tasks' file
descriptions into the run summary (row counts, vocabulary coverage, failed conversions: the run's
rules, itemsage_core/embedding/embed_run.py), warning when the model knows too little of the
catalog's words and printing a line per column with failed conversions. A committer
(jobs/embed_committers.py) then commits the quarantine table (append) and, past the
quarantine-share gate, the embeddings table (overwrite) in one transaction each, tagged with the
run id: a retried run commits nothing twice.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
import time
import zipfile
from pathlib import Path

import pyarrow as pa
from pyspark import SparkFiles, TaskContext
from pyspark.sql import SparkSession

from itemsage_core.contracts.dense_features import declared_dense, require_dense
from itemsage_core.embedding.batch_embedder import BatchEmbedder
from itemsage_core.embedding.embed_run import (
    EmbedConfig,
    add_totals,
    committed_line,
    embedded_rate,
    nothing_committed,
    run_id_for,
    run_summary,
    summary_warnings,
)
from itemsage_core.embedding.embed_task import embed_task
from itemsage_core.embedding.embeddings_table import committed_version, table_version
from itemsage_core.model.checkpoint import CONFIG, local_checkpoint, read_checkpoint_manifest
from itemsage_core.storage.uris import is_local_path
from jobs.catalog_readers import Task, as_batch, catalog_reader
from jobs.crash_points import crash_point
from jobs.embed_committers import COMMITTERS
from jobs.progress import stage_progress
from jobs.spark_failures import spark_failures
from jobs.spark_session import task_device

EMBED_STAGE = "itemsage embed: encode and write"  # the Spark UI's name of the main stage
_SHIPPED: set[tuple[int, str]] = set()


def _checkpoint_identity(model_dir: str, mapping) -> tuple[str, int]:
    """The checkpoint's model_version (after its safety and checksum checks) and image_dim,
    once the mapping is known to declare the dense features the model reads."""
    local = local_checkpoint(model_dir)  # an object store's model: the driver's cached copy
    version = read_checkpoint_manifest(local)["model_version"]
    config = json.loads((local / CONFIG).read_text())
    require_dense(declared_dense(mapping), dict(config["model"].get("dense", ())))
    return version, config["image_dim"]


def _ship_model(spark: SparkSession, model_dir: str, model_version: str) -> str | None:
    """Send a local checkpoint to every executor as an archive named after its version; returns
    the name under which SparkFiles finds it unpacked (None for a model on an object store,
    which each executor fetches into its own cache, model/model_store.py).

    Executors fetch it lazily, so the driver-side zip (a few MB in the temp dir) must outlive
    the session; the copy also protects the job from a model directory rewritten meanwhile.
    """
    if not is_local_path(model_dir):
        return None
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


def _embed_partition(
    config: EmbedConfig,
    shipped: str | None,
    started: dt.datetime,
    model_version: str,
    image_dim: int,
    targets: dict[str, str],
    run_id: str,
    repeated: pa.Table,
) -> Task:
    """The job's task: `embed_task` with the `shipped` checkpoint (loaded once per Python worker)
    on the task's device and CPUs, its rows stamped `started`. Its input is raw catalog rows,
    mapped, conformed and checked in the same Python pass as the encoder, or rows already checked
    (a `reason` column: an incremental run)."""
    batch_size, precision, mapping = config.batch_size, config.precision, config.mapping

    def run(batches):
        import torch

        context = TaskContext.get()
        torch.set_num_threads(max(1, context.cpus() if context else 1))
        embedder = BatchEmbedder.for_model(
            SparkFiles.get(shipped) if shipped else config.model_dir,
            model_version,
            batch_size=batch_size,
            device=task_device(),
            precision=precision,
        )
        yield from as_batch(
            embed_task(batches, embedder, targets, run_id, started, image_dim, mapping, repeated)
        )

    return run


class Laps:
    """Wall seconds per stage of the run: each call records the time since the last one."""

    def __init__(self, started: float):
        self.last, self.seconds = started, {}

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name], self.last = now - self.last, now

    def restart(self) -> None:
        self.last = time.perf_counter()


def embed_catalog(spark: SparkSession, config: EmbedConfig, progress=print) -> dict:
    """Run the job; returns the run summary (also recorded in the Delta commit's metadata).
    Warns through `progress` when the model's vocabulary knows less than `config.min_coverage`
    of the encoded rows' words."""
    started = time.perf_counter()
    model_version, image_dim = _checkpoint_identity(config.model_dir, config.mapping)
    run_id = run_id_for(config, model_version)
    summary = run_summary(config, run_id, model_version)
    done = committed_version(config.table_uri, run_id)
    if done is not None:
        progress(
            f"run {run_id} already committed {config.table_uri} at version {done}: nothing to do"
        )
        return {**summary, "status": "already_committed", "table_version": done}

    committer = COMMITTERS[config.writer](spark, config, run_id)
    read_version = table_version(config.table_uri)
    shipped = _ship_model(spark, config.model_dir, model_version)
    stamp = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    with spark_failures("embedding job", nothing_committed(config.table_uri, read_version)):
        reader = catalog_reader(spark, config, read_version, model_version, image_dim)
        repeated = reader.repeated_ids()
        summary.update(reader.plan(repeated, progress))
        master = spark.sparkContext.master
        progress(f"embedding {config.catalog} with {model_version} (run {run_id}) on {master}")
        targets = committer.targets
        task = _embed_partition(
            config, shipped, stamp, model_version, image_dim, targets, run_id, repeated
        )
        crash_point("before_write")
        lap = Laps(started)
        lap("read_s")
        with stage_progress(spark, progress, EMBED_STAGE):
            files = reader.embed(task)
        lap("embed_s")
        carried = reader.carry_over(targets["embeddings"], run_id)
        lap("carry_s")
        rows_in, conversions = reader.rows_in(), reader.conversions(files)
        lap("count_s")
    add_totals(summary, rows_in, files, carried, conversions, config.min_coverage)
    for line in summary_warnings(summary):
        progress(line)

    crash_point("after_write")
    summary.update(
        {
            "writer": config.writer,
            "seconds": lap.seconds,
            "embedded_per_s": embedded_rate(summary["embedded"], lap.seconds["embed_s"]),
        }
    )
    lap.restart()
    version = committer.commit(files + carried, summary, reader.read_version)
    lap("commit_s")
    lap.seconds["total_s"] = time.perf_counter() - started
    summary.update({"status": "committed", "table_version": version})
    progress(committed_line(summary))
    return summary
