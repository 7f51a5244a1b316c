"""`itemsage prepare-training`, `train`, `evaluate` and `evaluate-catalog`: making a model and
measuring it."""

from __future__ import annotations

import dataclasses
import json

import click
from click.core import ParameterSource

from itemsage_cli.config_defaults import default
from itemsage_cli.group import (
    catalog_option,
    cli,
    json_option,
    mapping_option,
    model_dir_option,
    spark_options,
    write_summary,
)
from itemsage_core.contracts.catalog_contract import DEFAULT_IMAGE_DIM
from itemsage_core.features.vocabulary import VocabConfig
from itemsage_core.model.config import ModelConfig
from itemsage_core.storage.uris import sibling
from itemsage_core.training.config import (
    CATALOG_EPOCHS,
    CATALOG_QUERIES,
    HELDOUT_INDEX_SIZE,
    RECALL_K,
    LoopConfig,
    StreamConfig,
    TrainConfig,
    TrainRun,
)
from itemsage_core.training.prepared_data import PrepareConfig


def _k_option(text: str):
    """evaluate's and evaluate-catalog's -k, with what k counts in each."""
    return click.option(
        "-k", "k", default=RECALL_K, show_default=True, type=click.IntRange(min=1), help=text
    )


def _parse_task_weights(values: tuple[str, ...]) -> tuple[tuple[str, float], ...]:
    from itemsage_core.training.training_examples import parse_tasks

    weights = []
    for value in values:
        name, sep, weight = value.partition("=")
        try:
            number = float(weight)
        except ValueError:
            number = -1.0
        if not sep or number < 0:
            raise click.BadParameter(
                f"'{value}' is not TASK=WEIGHT with WEIGHT >= 0", param_hint="--task-weight"
            )
        weights += [(task, number) for task in parse_tasks(name)]
    return tuple(weights)


vocab_option = click.option(
    "--vocab",
    "vocab_sizes",
    default=",".join(str(default(VocabConfig, k)) for k in ("unigrams", "bigrams", "trigrams")),
    show_default=True,
    metavar="UNI,BI,TRI",
    help="Top-K unigrams, bigrams, trigrams per text feature.",
)


neighbour_max_df_option = click.option(
    "--neighbour-max-df",
    default=default(PrepareConfig, "neighbour_max_df"),
    show_default=True,
    type=click.IntRange(min=2),
    help="Catalog objective on Spark: terms held by more products make no lexical neighbour "
    "pairs (docs/training.md).",
)


@cli.command("train")
@catalog_option
@click.option(
    "--engagements",
    default=None,
    help="Engagement log Parquet. Without it the encoder learns from the catalog "
    "itself (two random views of each product; docs/model.md).",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    metavar="DIR_OR_URI",
    help="Model directory or object-store URI to write (replaced if it holds an earlier "
    "checkpoint; the earlier one stays whole until the new one is complete).",
)
@mapping_option
@click.option(
    "--modalities",
    default="image,text",
    show_default=True,
    type=click.Choice(["image,text", "image", "text"]),
    help="Input modalities the encoder may use (ablations).",
)
@click.option(
    "--tasks",
    default="all",
    show_default=True,
    help="Tasks to train on: all, or a comma list of surface/engagement, surfaces or "
    "engagement types (e.g. add_to_cart,search/click).",
)
@click.option(
    "--task-weight",
    "task_weights",
    multiple=True,
    metavar="TASK=W",
    help="Multiply a task's sampling share (repeatable; TASK as in --tasks).",
)
@click.option(
    "--task-exponent",
    default=default(TrainConfig, "task_exponent"),
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Task share ~ weight x count**exponent (1: natural mix, 0: uniform).",
)
@click.option(
    "--catalog-task-weight",
    default=default(TrainConfig, "catalog_task_weight"),
    show_default=True,
    type=click.FloatRange(min=0),
    help="With --engagements: weight of the catalog objective as an auxiliary task, "
    "so products with few or no engagements still land in sensible places.",
)
@click.option(
    "--neighbours",
    default=default(TrainConfig, "neighbours"),
    show_default=True,
    type=click.IntRange(min=0),
    help="Catalog objective: pair each product with one of its K nearest neighbours by "
    "the --teacher; 0 pairs it with itself only.",
)
@click.option(
    "--teacher",
    default=None,
    metavar="NAME=W,...",
    help="Catalog objective: whose neighbours are the positives, a weighted sum of "
    "similarities: tfidf (the text) and any dense feature of the catalog by name, e.g. "
    "tfidf=0.5,text_embedding=0.5. Default: tfidf alone, or half tfidf and half the dense "
    "features when the catalog has some (docs/model.md).",
)
@click.option(
    "--mutual-neighbours/--all-neighbours",
    default=default(TrainConfig, "mutual_neighbours"),
    show_default=True,
    help="Catalog objective: pair a product only with the neighbours that also have it "
    "among their --neighbours (more often of its kind); one without pairs with itself.",
)
@click.option(
    "--neighbour-share",
    default=default(TrainConfig, "neighbour_share"),
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Catalog objective: share of pairs made with a neighbour (the rest: two "
    "views of the product itself).",
)
@click.option(
    "--exclude-feature",
    "exclude_features",
    multiple=True,
    metavar="FEATURE",
    help="Withhold a text feature (after the mapping) from training; repeatable.",
)
@click.option(
    "--epochs",
    default=None,
    type=click.IntRange(min=1),
    help=f"Passes over the engagement examples (default {default(TrainConfig, 'epochs')}) or, "
    f"without --engagements, over the catalog (default {CATALOG_EPOCHS}).",
)
@click.option(
    "--batch-size",
    default=default(TrainConfig, "batch_size"),
    show_default=True,
    type=click.IntRange(min=2),
    help="Examples per training step; the other examples of a batch are its in-batch negatives.",
)
@click.option(
    "--random-negatives",
    default=default(TrainConfig, "random_negatives"),
    show_default=True,
    type=click.IntRange(min=1),
    help="Random catalog negatives per batch.",
)
@click.option(
    "--learning-rate",
    default=default(TrainConfig, "learning_rate"),
    show_default=True,
    type=click.FloatRange(min=0),
    help="AdamW's learning rate.",
)
@click.option(
    "--holdout-fraction",
    default=default(TrainConfig, "holdout_fraction"),
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Share of the engagement log held out for evaluation.",
)
@click.option(
    "--seed", default=default(TrainConfig, "seed"), show_default=True, type=int, help="Random seed."
)
@click.option(
    "--d-model",
    default=default(ModelConfig, "d_model"),
    show_default=True,
    type=click.IntRange(min=8),
    help="Transformer width (divisible by the 8 heads).",
)
@click.option(
    "--ffn-dim",
    default=default(ModelConfig, "ffn_dim"),
    show_default=True,
    type=click.IntRange(min=8),
    help="Width of the transformer layers' feed-forward block.",
)
@click.option(
    "--layers",
    default=default(ModelConfig, "layers"),
    show_default=True,
    type=click.IntRange(min=1),
    help="Transformer layers over the [CLS] and feature tokens (the paper uses one).",
)
@click.option(
    "--hash-buckets",
    default=default(ModelConfig, "hash_buckets"),
    show_default=True,
    type=click.IntRange(min=1),
    help="Rows of the shared hash-embedding table (each vocabulary token sums k hashed rows).",
)
@vocab_option
@click.option(
    "--vocab-catalog",
    "vocab_catalogs",
    multiple=True,
    metavar="CATALOG",
    help="Another catalog whose text joins the vocabulary (repeatable), e.g. one to "
    "be embedded that the model does not train on.",
)
@click.option(
    "--vocab-mapping",
    "vocab_mappings",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Column mapping TOML for --vocab-catalog: once for all of them, or once "
    "per --vocab-catalog in order.",
)
@click.option(
    "--image-dim",
    default=DEFAULT_IMAGE_DIM,
    show_default=True,
    type=click.IntRange(min=1),
    help="Dimension of the catalog's image embeddings.",
)
@click.option(
    "--device",
    default=default(TrainRun, "device"),
    show_default=True,
    help="auto (CUDA if visible), cpu, cuda or cuda:N.",
)
@click.option(
    "--precision",
    default=default(TrainConfig, "precision"),
    show_default=True,
    type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
    help="auto: bf16 autocast on CUDA, fp32 on CPU.",
)
@click.option(
    "--num-processes",
    type=click.IntRange(min=1),
    default=None,
    help="Train data-parallel on Spark in this many processes (TorchDistributor, one task "
    "slot each): prepares the data on the executors first, then streams it.",
)
@click.option(
    "--prepared",
    type=click.Path(file_okay=False),
    default=None,
    help="With --num-processes/--master: where the training data is prepared "
    "[default: OUT.prepared beside --out]; --resume reuses the data already there.",
)
@click.option(
    "--max-steps",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after this many steps (fewer than the epochs' when smaller).",
)
@click.option(
    "--checkpoint-every",
    default=default(LoopConfig, "checkpoint_every"),
    show_default=True,
    type=click.IntRange(min=0),
    metavar="STEPS",
    help="Save the whole training state every STEPS steps (0: never), for --resume.",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where the training state is saved [default: OUT.state beside --out].",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue from the last complete state in --state-dir (same options as the "
    "killed run); starts afresh when there is none.",
)
@click.option(
    "--shuffle-buffer",
    default=default(StreamConfig, "shuffle_buffer"),
    show_default=True,
    type=click.IntRange(min=1),
    help="Streaming: examples each process holds to shuffle.",
)
@click.option(
    "--negative-pool",
    default=default(StreamConfig, "negatives"),
    show_default=True,
    type=click.IntRange(min=1),
    help="Streaming: random products each process holds to draw negatives from.",
)
@neighbour_max_df_option
@click.option(
    "--summary-json",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the run summary (data counts, history, held-out metrics, peak memory "
    "per process, seconds per stage) to this file.",
)
@spark_options
def train_command(
    num_processes: int | None,
    master: str | None,
    conf: tuple[str, ...],
    prepared: str | None,
    max_steps: int | None,
    checkpoint_every: int,
    state_dir: str | None,
    resume: bool,
    shuffle_buffer: int,
    negative_pool: int,
    neighbour_max_df: int,
    summary_json: str | None,
    **options: object,
) -> None:
    """Train an encoder on a catalog (and an engagement log); write a checkpoint directory.

    With --engagements: multi-task training on the log; holds out a deterministic slice of it
    and prints Recall@10 per task on that slice. Without: learns from the catalog's own text and
    images (check the result with `itemsage evaluate-catalog`). Prints loss and examples/s
    while training, then the checkpoint path and its model_version.

    In one process by default; with --num-processes N (or --master URL, or under
    spark-submit.sh) data-parallel on Spark: the data is prepared on the executors (as
    `itemsage prepare-training`) and N processes stream it (docs/training.md).
    """
    from jobs.spark_session import under_spark_submit

    run = _train_run(**options)
    state_dir = state_dir or sibling(run.out, ".state")
    run = dataclasses.replace(run, loop=LoopConfig(max_steps, checkpoint_every, state_dir, resume))
    if not (num_processes or master or under_spark_submit()):
        _refuse_spark_only_options()
        version, evaluation, summary = _train_in_process(run)
    else:
        stream = StreamConfig(shuffle_buffer=shuffle_buffer, negatives=negative_pool)
        data_dir = prepared or sibling(run.out, ".prepared")
        version, evaluation, summary = _train_on_spark(
            run, stream, data_dir, neighbour_max_df, num_processes or 1, master, conf
        )
    if summary_json:
        write_summary(summary, summary_json, echo=False)
    _echo_trained(run, version, evaluation)


def _train_in_process(run: TrainRun) -> tuple:
    """`train` in this process; returns the model version, evaluation and summary."""
    from itemsage_cli.stages import progress
    from itemsage_core.training.model_runs import train_model

    result = train_model(run, progress=progress)
    return result.model_version, result.evaluation, result.summary


def _refuse_spark_only_options() -> None:
    """A usage error for an option given that only training on Spark reads."""
    context = click.get_current_context()
    for name in ("prepared", "shuffle_buffer", "negative_pool", "neighbour_max_df", "conf"):
        if context.get_parameter_source(name) == ParameterSource.COMMANDLINE:
            flag = "--" + name.replace("_", "-")
            raise click.UsageError(f"{flag} is for training on Spark: add --num-processes N")


def _echo_trained(run: TrainRun, version: str, evaluation) -> None:
    """The held-out evaluation, where the model went, and (catalog-only) how to check it."""
    if evaluation:
        click.echo("\n".join(evaluation.lines()))
    click.echo(f"model {version} written to {run.out}")
    if not run.engagements:
        mapping_flag = f" --mapping {run.mapping}" if run.mapping else ""
        click.echo(
            f"check it: itemsage evaluate-catalog --model {run.out} --catalog "
            f"{run.catalog}{mapping_flag} --label-column COLUMN"
        )


def _spark_prepare_config(run: TrainRun, data_dir: str, neighbour_max_df: int) -> PrepareConfig:
    """The data preparation `train --num-processes` runs, after refusing what it cannot do yet
    (one message for each such option)."""
    from itemsage_cli import preflight

    mapping = preflight.mapping(run.mapping)
    for flag, given in (
        ("--vocab-catalog", run.vocab_catalogs),
        ("--exclude-feature", run.exclude_features),
        ("dense features (the mapping's [dense.*])", mapping and mapping.dense),
    ):
        if given:
            raise click.UsageError(
                f"{flag}: not supported with --num-processes/--master yet; train in one process"
            )
    catalog_task = not run.engagements or run.train.catalog_task_weight > 0
    return PrepareConfig(
        catalog=run.catalog,
        engagements=run.engagements,
        out=data_dir,
        mapping=mapping,
        vocab=run.vocab,
        holdout_fraction=run.train.holdout_fraction,
        image_dim=run.image_dim,
        seed=run.train.seed,
        neighbours=run.train.neighbours if catalog_task else 0,
        neighbour_max_df=neighbour_max_df,
    )


def _preparation_to_run(run: TrainRun, data_dir: str, prepare: PrepareConfig):
    """`prepare`, or None when --resume goes on with the data already in `data_dir` (its stream
    positions refer to those files), which must have been made by the same options."""
    from itemsage_cli import preflight
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
        raise click.UsageError(
            f"--resume goes on with the data prepared in {data_dir}, which other options "
            f"made ({', '.join(changed)} differ): resume with the run's own options"
        )
    return None


def _train_on_spark(
    run: TrainRun,
    stream: StreamConfig,
    data_dir: str,
    neighbour_max_df: int,
    processes: int,
    master: str | None,
    conf: tuple[str, ...],
) -> tuple:
    """`train --num-processes`: prepare the data on Spark (or reuse it when resuming), then
    train in `processes` processes; returns the model version, evaluation and summary."""
    from itemsage_cli.stages import progress
    from itemsage_core.training.data_parallel import PreparedRun
    from itemsage_core.training.model_runs import checkpoint_settings
    from jobs.distributed_training import train_on_spark
    from jobs.spark_session import get_spark, parse_conf

    prepare = _preparation_to_run(
        run, data_dir, _spark_prepare_config(run, data_dir, neighbour_max_df)
    )
    spark = get_spark("itemsage-train", master, parse_conf(conf))
    spec = PreparedRun(
        data_dir=data_dir,
        out=run.out,
        train=run.train,
        model_options=run.model_options,
        hash_seed=run.hash_seed,
        settings=checkpoint_settings(run),
        loop=run.loop,
        stream=stream,
        device=run.device,
        threads=int(spark.sparkContext.getConf().get("spark.task.cpus", "1")),
        engagements=bool(run.engagements),
    )
    result = train_on_spark(spark, spec, processes, prepare, progress)
    return result["model_version"], result["evaluation"], result["summary"]


def _train_config(
    fields: dict, tasks: str, task_weights: tuple[str, ...], teacher: str | None, **given: object
) -> TrainConfig:
    """The TrainConfig of `train`'s options: its fields by name (taken out of `fields`), the
    parsed lists, the epochs' default by objective (`given`: epochs and seed)."""
    from itemsage_core.features.teacher_neighbours import parse_teacher
    from itemsage_core.training.training_examples import parse_tasks

    engagements = fields["engagements"]
    if fields["catalog_task_weight"] and not engagements:
        raise click.UsageError(
            "--catalog-task-weight weighs the catalog objective beside "
            "--engagements; without a log the catalog objective is the "
            "only one"
        )
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    epochs = given["epochs"] or (default(TrainConfig, "epochs") if engagements else CATALOG_EPOCHS)
    return TrainConfig(
        teacher=parse_teacher(teacher) if teacher else (),
        epochs=epochs,
        seed=given["seed"],
        tasks=parse_tasks(tasks),
        task_weights=_parse_task_weights(task_weights),
        **{k: fields.pop(k) for k in list(fields) if k in names},
    )


def _train_run(
    *,
    out_dir: str,
    tasks: str,
    task_weights: tuple[str, ...],
    epochs: int | None,
    seed: int,
    modalities: str,
    d_model: int,
    ffn_dim: int,
    layers: int,
    hash_buckets: int,
    vocab_sizes: str,
    teacher: str | None,
    **fields: object,
) -> TrainRun:
    """`itemsage train`'s options as a TrainRun: the TrainConfig and TrainRun fields by name,
    the model's shape, the vocabulary sizes; a bad combination is a usage error."""
    vocab = _vocab_config(vocab_sizes)
    if d_model % 8:
        raise click.BadParameter(f"{d_model} is not divisible by 8 heads", param_hint="--d-model")
    config = _train_config(fields, tasks, task_weights, teacher, epochs=epochs, seed=seed)
    model_options = {
        "d_model": d_model,
        "ffn_dim": ffn_dim,
        "layers": layers,
        "mlp_hidden": d_model,
        "hash_buckets": hash_buckets,
        "modalities": tuple(modalities.split(",")),
    }
    return TrainRun(
        out=out_dir,
        train=config,
        model_options=tuple(model_options.items()),
        vocab=vocab,
        hash_seed=seed,
        **fields,
    )


def _echo_result(model_version: str, result: object, as_json: bool) -> None:
    """An evaluation's result: one JSON object, or its lines after the model's version."""
    if as_json:
        click.echo(json.dumps({"model_version": model_version, **result.to_dict()}, sort_keys=True))
    else:
        click.echo(f"model {model_version}")
        click.echo("\n".join(result.lines()))


@cli.command("evaluate")
@model_dir_option
@click.option("--catalog", default=None, help="Catalog Parquet: a file, directory or glob.")
@click.option("--engagements", default=None, help="Engagement log Parquet.")
@mapping_option
@click.option(
    "--prepared",
    type=click.Path(file_okay=False),
    default=None,
    help="Instead of --catalog and --engagements: training data prepared by "
    "prepare-training (or train --num-processes), streamed from its shards.",
)
@click.option(
    "--index-size",
    default=HELDOUT_INDEX_SIZE,
    show_default=True,
    type=click.IntRange(min=1),
    help="Rank among all catalog products up to this many, else a fixed sample.",
)
@_k_option("Recall@k: a held-out example is a hit when its product is among the k nearest.")
@json_option
def evaluate_command(
    model_dir: str,
    catalog: str | None,
    engagements: str | None,
    mapping: str | None,
    prepared: str | None,
    index_size: int,
    k: int,
    as_json: bool,
) -> None:
    """Recall@K per task and overall on the held-out slice of an engagement log.

    The slice is chosen by the same deterministic rule as in training (docs/model.md), so
    evaluating on the training log measures held-out examples only. Give --catalog and
    --engagements, or --prepared DIR (the held-out examples prepared there).
    """
    from itemsage_cli.stages import progress
    from itemsage_core.training.model_runs import evaluate_model, evaluate_prepared_model

    if prepared and (catalog or engagements or mapping):
        raise click.UsageError(
            "give --prepared, or --catalog and --engagements (and --mapping), not both"
        )
    if prepared:
        version, result = evaluate_prepared_model(
            model_dir, prepared, index_size=index_size, k=k, progress=progress
        )
    elif catalog and engagements:
        version, result = evaluate_model(
            model_dir,
            catalog,
            engagements,
            mapping,
            index_size=index_size,
            k=k,
            progress=progress,
        )
    else:
        raise click.UsageError("give --catalog and --engagements, or --prepared DIR")
    _echo_result(version, result, as_json)


@cli.command("evaluate-catalog")
@model_dir_option
@catalog_option
@mapping_option
@click.option(
    "--label-column",
    required=True,
    metavar="COLUMN",
    help="Column (after the mapping) whose values neighbours should share, e.g. a "
    "category; 'A > B > C' paths are also scored on their first level.",
)
@click.option(
    "--exclude-feature",
    "exclude_features",
    multiple=True,
    metavar="FEATURE",
    help="Withhold a text feature from the model and TF-IDF alike (e.g. the label's "
    "own column); repeatable.",
)
@click.option(
    "--queries",
    default=CATALOG_QUERIES,
    show_default=True,
    type=click.IntRange(min=1),
    help="Query products, a fixed random sample (seed 0).",
)
@_k_option("Neighbours per query product whose labels are compared.")
@click.option(
    "--baseline-model",
    "baseline_models",
    multiple=True,
    metavar="DIR_OR_URI",
    help="A sentence-transformers model folder (or URI) to rank the same products by, over "
    "the same text as TF-IDF: a pretrained baseline row named after the folder; "
    "repeatable. Needs the text extra (pip install 'itemsage-spark[text]').",
)
@json_option
def evaluate_catalog_command(
    model_dir: str,
    catalog: str,
    mapping: str | None,
    label_column: str,
    exclude_features: tuple[str, ...],
    queries: int,
    k: int,
    baseline_models: tuple[str, ...],
    as_json: bool,
) -> None:
    """How often a product's nearest neighbours share its label, beside TF-IDF, any
    pretrained --baseline-model and random.

    Exact cosine top-k over every valid product that has a label, for a sample of query
    products; the TF-IDF and pretrained baselines read the same text features. Also the share
    of the catalog's words the model's vocabulary knows, per feature. Needs no engagement log.
    """
    from itemsage_cli.stages import progress
    from itemsage_core.training.model_runs import evaluate_catalog_model

    version, result = evaluate_catalog_model(
        model_dir,
        catalog,
        label_column,
        mapping,
        exclude_features,
        queries,
        k,
        progress=progress,
        baseline_models=baseline_models,
    )
    _echo_result(version, result, as_json)


def _vocab_config(sizes: str) -> VocabConfig:
    """--vocab UNI,BI,TRI as a VocabConfig."""
    try:
        uni, bi, tri = (int(x) for x in sizes.split(","))
    except ValueError:
        raise click.BadParameter(
            f"'{sizes}' is not three integers UNI,BI,TRI", param_hint="--vocab"
        ) from None
    return VocabConfig(unigrams=uni, bigrams=bi, trigrams=tri)


@cli.command("prepare-training")
@catalog_option
@click.option(
    "--engagements",
    default=None,
    help="Engagement log Parquet (without it: the catalog objective's data only).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Directory or object-store URI to write the prepared data into (the previous data "
    "stays whole until the new data is complete).",
)
@mapping_option
@vocab_option
@click.option(
    "--holdout-fraction",
    default=default(PrepareConfig, "holdout_fraction"),
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Share of the engagement log held out for evaluation.",
)
@click.option(
    "--image-dim",
    default=DEFAULT_IMAGE_DIM,
    show_default=True,
    type=click.IntRange(min=1),
    help="Dimension of the catalog's image embeddings.",
)
@click.option(
    "--shards",
    default=default(PrepareConfig, "shards"),
    show_default=True,
    type=click.IntRange(min=0),
    help="Parquet files per part (0: one per task slot).",
)
@click.option(
    "--seed",
    default=default(PrepareConfig, "seed"),
    show_default=True,
    type=int,
    help="Seed of the examples' shuffle.",
)
@click.option(
    "--neighbours",
    default=default(PrepareConfig, "neighbours"),
    show_default=True,
    type=click.IntRange(min=0),
    help="Catalog objective: find each product's K nearest lexical neighbours and write "
    "catalog pairs (0: none).",
)
@neighbour_max_df_option
@click.option(
    "--pairs-per-product",
    default=default(PrepareConfig, "pairs_per_product"),
    show_default=True,
    type=click.IntRange(min=1),
    help="Catalog pairs written per product, each with a neighbour drawn at random.",
)
@click.option(
    "--summary-json",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the manifest to this file.",
)
@spark_options
def prepare_training_command(
    catalog: str,
    engagements: str | None,
    out: str,
    mapping: str | None,
    vocab_sizes: str,
    holdout_fraction: float,
    image_dim: int,
    shards: int,
    seed: int,
    neighbours: int,
    neighbour_max_df: int,
    pairs_per_product: int,
    summary_json: str | None,
    master: str | None,
    conf: tuple[str, ...],
) -> None:
    """Prepare training data on Spark: validate the catalog and the engagement log, count the
    vocabulary, encode the products and split the engagements into training and held-out
    examples on the executors (with --neighbours, also catalog pairs for the catalog
    objective), and write them as shuffled Parquet shards with the vocabulary and a manifest
    (counts, files, checksums). Prints the manifest."""
    from itemsage_cli import preflight
    from itemsage_cli.stages import progress
    from jobs.spark_session import get_spark, parse_conf
    from jobs.training_data import prepare_training

    config = PrepareConfig(
        catalog=catalog,
        engagements=engagements,
        out=out,
        mapping=preflight.mapping(mapping),
        vocab=_vocab_config(vocab_sizes),
        holdout_fraction=holdout_fraction,
        image_dim=image_dim,
        shards=shards,
        seed=seed,
        neighbours=neighbours,
        neighbour_max_df=neighbour_max_df,
        pairs_per_product=pairs_per_product,
    )
    if not engagements and not neighbours:
        raise click.UsageError("give --engagements, --neighbours K, or both")
    preflight.catalog_path(catalog, config.mapping)
    spark = get_spark("itemsage-prepare-training", master, parse_conf(conf))
    write_summary(prepare_training(spark, config, progress=progress), summary_json)
