"""`itemsage train`: its options (defaults read from TrainRequest), one call to the training
recipe, the result rendered."""

from __future__ import annotations

import click

from itemsage_cli.group import (
    catalog_option,
    cli,
    mapping_option,
    shown_default,
    spark_options,
    write_summary,
)
from itemsage_cli.progress import progress
from itemsage_core.training.config import CATALOG_EPOCHS, TrainConfig
from itemsage_runs.defaults import default
from itemsage_runs.train_request import TrainRequest


def _shown(name: str) -> dict:
    return shown_default(TrainRequest, name)


vocab_option = click.option(
    "--vocab",
    "vocab_sizes",
    **_shown("vocab_sizes"),
    metavar="UNI,BI,TRI",
    help="Top-K unigrams, bigrams, trigrams per text feature.",
)


def neighbour_max_df_option(request: type):
    """--neighbour-max-df, its default from `request`."""
    return click.option(
        "--neighbour-max-df",
        **shown_default(request, "neighbour_max_df"),
        type=click.IntRange(min=2),
        help="Catalog objective on Spark: terms held by more products make no lexical "
        "neighbour pairs (docs/training.md).",
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
    "out",
    required=True,
    metavar="DIR_OR_URI",
    help="Model directory or object-store URI to write (replaced if it holds an earlier "
    "checkpoint; the earlier one stays whole until the new one is complete).",
)
@mapping_option
@click.option(
    "--modalities",
    **_shown("modalities"),
    type=click.Choice(["image,text", "image", "text"]),
    help="Input modalities the encoder may use (ablations).",
)
@click.option(
    "--tasks",
    **_shown("tasks"),
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
    **_shown("task_exponent"),
    type=click.FloatRange(0, 1),
    help="Task share ~ weight x count**exponent (1: natural mix, 0: uniform).",
)
@click.option(
    "--catalog-task-weight",
    **_shown("catalog_task_weight"),
    type=click.FloatRange(min=0),
    help="With --engagements: weight of the catalog objective as an auxiliary task, "
    "so products with few or no engagements still land in sensible places.",
)
@click.option(
    "--neighbours",
    **_shown("neighbours"),
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
    **_shown("mutual_neighbours"),
    help="Catalog objective: pair a product only with the neighbours that also have it "
    "among their --neighbours (more often of its kind); one without pairs with itself.",
)
@click.option(
    "--neighbour-share",
    **_shown("neighbour_share"),
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
    **_shown("batch_size"),
    type=click.IntRange(min=2),
    help="Examples per training step; the other examples of a batch are its in-batch negatives.",
)
@click.option(
    "--random-negatives",
    **_shown("random_negatives"),
    type=click.IntRange(min=1),
    help="Random catalog negatives per batch.",
)
@click.option(
    "--learning-rate",
    **_shown("learning_rate"),
    type=click.FloatRange(min=0),
    help="AdamW's learning rate.",
)
@click.option(
    "--holdout-fraction",
    **_shown("holdout_fraction"),
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Share of the engagement log held out for evaluation.",
)
@click.option("--seed", **_shown("seed"), type=int, help="Random seed.")
@click.option(
    "--d-model",
    **_shown("d_model"),
    type=click.IntRange(min=8),
    help="Transformer width (divisible by the 8 heads).",
)
@click.option(
    "--ffn-dim",
    **_shown("ffn_dim"),
    type=click.IntRange(min=8),
    help="Width of the transformer layers' feed-forward block.",
)
@click.option(
    "--layers",
    **_shown("layers"),
    type=click.IntRange(min=1),
    help="Transformer layers over the [CLS] and feature tokens (the paper uses one).",
)
@click.option(
    "--hash-buckets",
    **_shown("hash_buckets"),
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
    **_shown("image_dim"),
    type=click.IntRange(min=1),
    help="Dimension of the catalog's image embeddings.",
)
@click.option(
    "--device",
    **_shown("device"),
    help="auto (CUDA if visible), cpu, cuda or cuda:N.",
)
@click.option(
    "--precision",
    **_shown("precision"),
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
    **_shown("checkpoint_every"),
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
    **_shown("shuffle_buffer"),
    type=click.IntRange(min=1),
    help="Streaming: examples each process holds to shuffle.",
)
@click.option(
    "--negative-pool",
    **_shown("negative_pool"),
    type=click.IntRange(min=1),
    help="Streaming: random products each process holds to draw negatives from.",
)
@neighbour_max_df_option(TrainRequest)
@click.option(
    "--summary-json",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the run summary (data counts, history, held-out metrics, peak memory "
    "per process, seconds per stage) to this file.",
)
@spark_options
def train_command(summary_json: str | None, **options: object) -> None:
    """Train an encoder on a catalog (and an engagement log); write a checkpoint directory.

    With --engagements: multi-task training on the log; holds out a deterministic slice of it
    and prints Recall@10 per task on that slice. Without: learns from the catalog's own text and
    images (check the result with `itemsage evaluate-catalog`). Prints loss and examples/s
    while training, then the checkpoint path and its model_version.

    In one process by default; with --num-processes N (or --master URL, or under
    spark-submit.sh) data-parallel on Spark: the data is prepared on the executors (as
    `itemsage prepare-training`) and N processes stream it (docs/training.md).
    """
    from itemsage_runs.train import train

    request = TrainRequest(**options)
    trained = train(request, progress=progress)
    if summary_json:
        write_summary(trained.summary, summary_json, echo=False)
    if trained.evaluation:
        click.echo("\n".join(trained.evaluation.lines()))
    click.echo(f"model {trained.model_version} written to {request.out}")
    if not request.engagements:
        mapping_flag = f" --mapping {request.mapping}" if request.mapping else ""
        click.echo(
            f"check it: itemsage evaluate-catalog --model {request.out} --catalog "
            f"{request.catalog}{mapping_flag} --label-column COLUMN"
        )
