"""Data-parallel training on Spark (`itemsage train --num-processes N [--master URL]`): the
training data prepared on the executors (jobs/training_data.py), then N training processes
started by Spark's own TorchDistributor as one barrier stage (one torchrun per task, gloo on
CPU executors, nccl on GPU ones), each streaming its shards (training/data_parallel.py)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from pyspark.ml.torch.distributor import TorchDistributor
from pyspark.sql import SparkSession

from itemsage_core.errors import ItemSageError
from itemsage_core.storage.uris import is_local_path
from itemsage_core.training.config import PrepareConfig
from itemsage_core.training.data_parallel import PreparedRun, peak_rss_mb, train_process
from itemsage_core.training.prepared_data import read_prepared_manifest
from jobs.spark_failures import spark_failures
from jobs.training_data import prepare_training

GPU_AMOUNT = "spark.task.resource.gpu.amount"


def check_slots(spark: SparkSession, processes: int, use_gpu: bool, wait_s: float = 60) -> None:
    """One-line errors for a barrier stage that could never start. Task slots are counted from
    the registered executors, waiting up to `wait_s` for a cluster that is still starting."""
    conf = spark.sparkContext.getConf()
    if conf.get("spark.dynamicAllocation.enabled", "false").lower() == "true":
        raise ItemSageError(
            "distributed training runs as a barrier stage, which Spark refuses with dynamic "
            "allocation: --conf spark.dynamicAllocation.enabled=false"
        )
    if use_gpu and not conf.get(GPU_AMOUNT):
        raise ItemSageError(
            f"training on GPU executors needs --conf {GPU_AMOUNT}=1 (one GPU per process), "
            "or --device cpu"
        )
    cpus = int(conf.get("spark.task.cpus", "1"))
    deadline = time.monotonic() + wait_s
    while (slots := spark.sparkContext.defaultParallelism // cpus) < processes:
        if time.monotonic() > deadline:
            raise ItemSageError(
                f"--num-processes {processes} needs {processes} task slots at once and the "
                f"cluster has {slots}: lower --num-processes or add executors"
            )
        time.sleep(1)


def train_on_spark(
    spark: SparkSession,
    prepared: PreparedRun,
    processes: int,
    prepare: PrepareConfig | None,
    progress=print,
) -> dict:
    """Prepare the data (unless `prepare` is None: reuse what `prepared.data_dir` holds), then
    train in `processes` processes; returns rank 0's model version and summary, with the seconds
    of each stage and the driver's peak memory."""
    gpus = bool(spark.sparkContext.getConf().get(GPU_AMOUNT))
    requested = prepared.run.device
    use_gpu = requested.startswith("cuda") or (requested == "auto" and gpus)
    device = "cuda" if use_gpu else "cpu"  # the driver's choice, not each executor's
    prepared = dataclasses.replace(prepared, run=dataclasses.replace(prepared.run, device=device))
    out = prepared.run.out
    local = spark.sparkContext.master.startswith("local")
    check_slots(spark, processes, use_gpu, wait_s=0 if local else 60)
    stages = {}
    started = time.perf_counter()
    if prepare is not None:
        prepare_training(spark, prepare, progress)
    else:
        read_prepared_manifest(prepared.data_dir)
        progress(f"reusing the training data prepared in {prepared.data_dir}")
    stages["prepare_s"] = time.perf_counter() - started
    if is_local_path(out):
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    progress(
        f"training in {processes} process{'es' if processes > 1 else ''} on "
        f"{spark.sparkContext.master} ({'GPU' if use_gpu else 'CPU'}) through TorchDistributor"
    )
    started = time.perf_counter()
    distributor = TorchDistributor(num_processes=processes, local_mode=False, use_gpu=use_gpu)
    with spark_failures("training", f"{out} was left as it was"):
        result = distributor.run(train_process, prepared, progress)
    stages["train_s"] = time.perf_counter() - started
    result["summary"]["stages"] = stages
    result["summary"]["driver_peak_rss_mb"] = peak_rss_mb()
    return result
