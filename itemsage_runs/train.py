"""Training recipes: `train` (in this process, or data-parallel on Spark: prepare the data on the
executors, or reuse it when resuming, then TorchDistributor) and `prepare_training`."""

from __future__ import annotations

import dataclasses

from itemsage_core.errors import OptionError
from itemsage_core.storage.uris import sibling
from itemsage_core.training.config import PrepareConfig, StreamConfig, TrainRun
from itemsage_runs import preflight
from itemsage_runs.spark import Progress, silent, spark_session
from itemsage_runs.train_request import TrainRequest


@dataclasses.dataclass(frozen=True)
class Trained:
    """What a training run made: the model's version, its held-out evaluation (with an
    engagement log) and the run summary."""

    model_version: str
    evaluation: object | None
    summary: dict


def on_spark(request: TrainRequest) -> bool:
    """Whether the run trains on Spark: --num-processes, --master, or under spark-submit."""
    from jobs.spark_session import under_spark_submit

    return bool(request.num_processes or request.master or under_spark_submit())


def train(request: TrainRequest, progress: Progress = silent) -> Trained:
    """Train the model `request` describes and write its checkpoint to `request.out`."""
    run = request.training_run()
    preflight.writable(run.out, "--out")
    if run.loop.state_dir:
        preflight.writable(run.loop.state_dir, "--state-dir")
    if on_spark(request):
        return _train_on_spark(request, run, progress)
    given = request.spark_only_given()
    if given:
        raise OptionError(f"{given[0]} is for training on Spark: add --num-processes N")
    from itemsage_core.training.model_runs import train_model

    result = train_model(run, progress=progress)
    return Trained(result.model_version, result.evaluation, result.summary)


def spark_preparation(run: TrainRun, data_dir: str, neighbour_max_df: int) -> PrepareConfig:
    """The data preparation training on Spark runs, after refusing what it cannot do yet."""
    mapping = run.mapping
    for flag, given in (
        ("--vocab-catalog", run.vocab_catalogs),
        ("--exclude-feature", run.exclude_features),
        ("dense features (the mapping's [dense.*])", mapping and mapping.dense),
    ):
        if given:
            raise OptionError(
                f"{flag}: not supported with --num-processes/--master yet; train in one process"
            )
    return PrepareConfig.for_run(run, data_dir, neighbour_max_df)


def preparation_to_run(run: TrainRun, data_dir: str, prepare: PrepareConfig):
    """`prepare`, or None when resuming goes on with the data already in `data_dir` (its stream
    positions refer to those files), which must have been made by the same options."""
    from itemsage_core.storage.store import Store
    from itemsage_core.training.prepared_data import (
        MANIFEST,
        changed_preparation,
        read_prepared_manifest,
    )

    if not (run.loop.resume and Store(data_dir).exists(MANIFEST)):
        preflight.catalog_path(run.catalog, prepare.mapping)
        return prepare
    changed = changed_preparation(read_prepared_manifest(data_dir), prepare)
    if changed:
        raise OptionError(
            f"--resume goes on with the data prepared in {data_dir}, which other options "
            f"made ({', '.join(changed)} differ): resume with the run's own options"
        )
    return None


def _train_on_spark(request: TrainRequest, run: TrainRun, progress: Progress) -> Trained:
    """Prepare the data on Spark (or reuse it when resuming), then train in
    `request.num_processes` processes (one by default)."""
    from itemsage_core.training.data_parallel import PreparedRun
    from jobs.distributed_training import train_on_spark

    data_dir = request.prepared or sibling(run.out, ".prepared")
    preflight.writable(data_dir, "--prepared")
    prepare = preparation_to_run(
        run, data_dir, spark_preparation(run, data_dir, request.neighbour_max_df)
    )
    spark = spark_session("itemsage-train", request.master, request.conf)
    spec = PreparedRun(
        run=run,
        data_dir=data_dir,
        stream=StreamConfig(request.shuffle_buffer, request.negative_pool),
        threads=int(spark.sparkContext.getConf().get("spark.task.cpus", "1")),
    )
    result = train_on_spark(spark, spec, request.num_processes or 1, prepare, progress)
    return Trained(result["model_version"], result["evaluation"], result["summary"])


def prepare_training(
    config: PrepareConfig,
    master: str | None = None,
    conf: tuple[str, ...] = (),
    progress: Progress = silent,
) -> dict:
    """`itemsage prepare-training`: the data written on Spark; its manifest."""
    from jobs.training_data import prepare_training as prepare_on_spark

    if not config.engagements and not config.neighbours:
        raise OptionError("give --engagements, --neighbours K, or both")
    preflight.catalog_path(config.catalog, config.mapping)
    preflight.writable(config.out, "--out")
    spark = spark_session("itemsage-prepare-training", master, conf)
    return prepare_on_spark(spark, config, progress=progress)
