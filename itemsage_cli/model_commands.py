"""`itemsage prepare-training`, `evaluate` and `evaluate-catalog`: a model's data and its
measures (`train` is in train_command.py)."""

from __future__ import annotations

import json

import click

from itemsage_cli.group import (
    catalog_option,
    cli,
    json_option,
    mapping_option,
    model_dir_option,
    shown_default,
    spark_options,
    write_summary,
)
from itemsage_cli.progress import progress
from itemsage_cli.train_command import neighbour_max_df_option, vocab_option
from itemsage_core.training.config import (
    CATALOG_QUERIES,
    HELDOUT_INDEX_SIZE,
    RECALL_K,
    PrepareConfig,
)


def _k_option(text: str):
    """evaluate's and evaluate-catalog's -k, with what k counts in each."""
    return click.option(
        "-k", "k", default=RECALL_K, show_default=True, type=click.IntRange(min=1), help=text
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
    from itemsage_runs.evaluate import evaluate

    version, result = evaluate(
        model_dir, catalog, engagements, mapping, prepared, index_size, k, progress
    )
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
    from itemsage_runs.evaluate import evaluate_catalog

    version, result = evaluate_catalog(
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
    **shown_default(PrepareConfig, "holdout_fraction"),
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Share of the engagement log held out for evaluation.",
)
@click.option(
    "--image-dim",
    **shown_default(PrepareConfig, "image_dim"),
    type=click.IntRange(min=1),
    help="Dimension of the catalog's image embeddings.",
)
@click.option(
    "--shards",
    **shown_default(PrepareConfig, "shards"),
    type=click.IntRange(min=0),
    help="Parquet files per part (0: one per task slot).",
)
@click.option(
    "--seed",
    **shown_default(PrepareConfig, "seed"),
    type=int,
    help="Seed of the examples' shuffle.",
)
@click.option(
    "--neighbours",
    **shown_default(PrepareConfig, "neighbours"),
    type=click.IntRange(min=0),
    help="Catalog objective: find each product's K nearest lexical neighbours and write "
    "catalog pairs (0: none).",
)
@neighbour_max_df_option(PrepareConfig)
@click.option(
    "--pairs-per-product",
    **shown_default(PrepareConfig, "pairs_per_product"),
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
    mapping: str | None,
    vocab_sizes: str,
    summary_json: str | None,
    master: str | None,
    conf: tuple[str, ...],
    **options: object,
) -> None:
    """Prepare training data on Spark: validate the catalog and the engagement log, count the
    vocabulary, encode the products and split the engagements into training and held-out
    examples on the executors (with --neighbours, also catalog pairs for the catalog
    objective), and write them as shuffled Parquet shards with the vocabulary and a manifest
    (counts, files, checksums). Prints the manifest."""
    from itemsage_runs import preflight
    from itemsage_runs.train import prepare_training
    from itemsage_runs.train_request import vocab_config

    config = PrepareConfig(
        mapping=preflight.mapping(mapping), vocab=vocab_config(vocab_sizes), **options
    )
    write_summary(prepare_training(config, master, conf, progress), summary_json)
