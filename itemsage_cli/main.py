"""`itemsage`: the command-line interface (a click group; every command has --help).

User mistakes (ItemSageError, and Spark's analysis errors unless --verbose) print one
`error: ...` line on stderr and exit with status 1; click's own usage errors exit with status 2.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import click

from index_builder.build_config import BuildIndexConfig
from index_builder.index_reader import ShardedIndex, verify_current
from itemsage_cli.config_defaults import default
from itemsage_cli.demo import DemoConfig
from itemsage_core.contracts.catalog_contract import DEFAULT_IMAGE_DIM
from itemsage_core.embedding.embed_run import EmbedConfig
from itemsage_core.errors import ItemSageError
from itemsage_core.features.vocabulary import VocabConfig
from itemsage_core.model.config import ModelConfig
from itemsage_core.synthetic.world import WorldConfig
from itemsage_core.training.config import (
    CATALOG_EPOCHS,
    CATALOG_QUERIES,
    HELDOUT_INDEX_SIZE,
    RECALL_K,
    TrainConfig,
    TrainRun,
)
from jobs.embed_committers import COMMITTERS


def _quiet_analysis_error(exc: Exception) -> bool:
    """Whether `exc` is Spark's AnalysisException while Spark's log is quiet (no --verbose, no
    ITEMSAGE_SPARK_LOG_LEVEL above ERROR). pyspark is imported by Spark commands only."""
    errors = sys.modules.get("pyspark.errors")
    if errors is None or not isinstance(exc, errors.AnalysisException):
        return False
    from jobs.spark_session import QUIET_LEVELS, log_level

    return log_level() in QUIET_LEVELS


class ItemSageGroup(click.Group):
    """A click group that turns ItemSageError (and, without --verbose, Spark's analysis errors)
    into one clear line and a non-zero exit."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ItemSageError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except Exception as exc:
            if not _quiet_analysis_error(exc):
                raise
            click.echo(f"error: {str(exc).splitlines()[0]}", err=True)
            sys.exit(1)


@click.group(cls=ItemSageGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="itemsage-spark")
@click.option(
    "--verbose",
    is_flag=True,
    help="Spark's full console log (WARN; ITEMSAGE_SPARK_LOG_LEVEL wins) and the "
    "traceback of a Spark analysis error. Default: Spark logs errors only and "
    "an analysis error is one `error:` line.",
)
def cli(verbose: bool) -> None:
    """ItemSage on Spark: product embeddings and per-surface nearest-neighbour indexes.

    Run `itemsage COMMAND --help` for a command's options.
    """
    if verbose:
        os.environ.setdefault("ITEMSAGE_SPARK_LOG_LEVEL", "WARN")


def spark_options(fn: Callable) -> Callable:
    """--master and repeated --conf k=v, for commands that start Spark."""
    fn = click.option(
        "--conf",
        "conf",
        multiple=True,
        metavar="KEY=VALUE",
        help="Spark configuration, repeatable (overrides the defaults).",
    )(fn)
    return click.option(
        "--master",
        default=None,
        metavar="URL",
        help="Spark master (default: local[*], or spark-submit's).",
    )(fn)


@cli.command()
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Directory to write catalog/ and engagements/ into.",
)
@click.option(
    "--products",
    default=default(WorldConfig, "products"),
    show_default=True,
    type=click.IntRange(min=1),
    help="Number of products.",
)
@click.option(
    "--seed", default=default(WorldConfig, "seed"), show_default=True, type=int, help="Random seed."
)
@click.option(
    "--engagements-per-product",
    default=default(WorldConfig, "engagements_per_product"),
    show_default=True,
    type=click.FloatRange(min=0),
    help="Engagement log rows per product.",
)
def generate(out_dir: str, products: int, seed: int, engagements_per_product: float) -> None:
    """Generate a synthetic shopping world: DIR/catalog/ and DIR/engagements/ (Parquet)."""
    from itemsage_cli.stages import generate_stage

    generate_stage(Path(out_dir), products, seed, engagements_per_product)


@cli.command()
@click.option("--catalog", required=True, help="Catalog Parquet: a file, directory or glob.")
@click.option(
    "--mapping",
    type=click.Path(dir_okay=False),
    default=None,
    help="Column mapping TOML (see docs/data-contracts.md).",
)
@click.option("--engagements", default=None, help="Also validate this engagement log.")
@click.option(
    "--image-dim",
    default=DEFAULT_IMAGE_DIM,
    show_default=True,
    type=click.IntRange(min=1),
    help="Dimension of image and query embeddings.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option(
    "--spark",
    "use_spark",
    is_flag=True,
    help="Validate on Spark even a local catalog (implied by --master, --conf, "
    "spark-submit.sh and an object-store catalog).",
)
@spark_options
def validate(
    catalog: str,
    mapping: str | None,
    engagements: str | None,
    image_dim: int,
    as_json: bool,
    use_spark: bool,
    master: str | None,
    conf: tuple[str, ...],
) -> None:
    """Check a catalog (and optionally an engagement log) against the data contracts.

    Reports rows, valid and rejected counts, the offending rows per rule and the extra-column
    values the mapping could not convert. A local catalog is read in-process, batch by batch.
    Exits 0 when the data is usable (row-level rejections are reported, not fatal) and 1 on a
    schema-level error.
    """
    from itemsage_cli.stages import validate_stage

    reports = validate_stage(catalog, mapping, engagements, image_dim, master, conf, use_spark)
    if as_json:
        click.echo(json.dumps({r.contract: r.to_dict() for r in reports}, sort_keys=True))
    else:
        for report in reports:
            click.echo("\n".join(report.lines()))


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


@cli.command("train")
@click.option("--catalog", required=True, help="Catalog Parquet: a file, directory or glob.")
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
    type=click.Path(file_okay=False),
    help="Model directory to write (replaced if it holds an earlier checkpoint).",
)
@click.option(
    "--mapping",
    type=click.Path(dir_okay=False),
    default=None,
    help="Column mapping TOML for the catalog.",
)
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
    help="Catalog objective: pair each product with one of its K nearest lexical "
    "(TF-IDF) neighbours; 0 pairs it with itself only.",
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
)
@click.option(
    "--layers",
    default=default(ModelConfig, "layers"),
    show_default=True,
    type=click.IntRange(min=1),
)
@click.option(
    "--hash-buckets",
    default=default(ModelConfig, "hash_buckets"),
    show_default=True,
    type=click.IntRange(min=1),
)
@click.option(
    "--vocab",
    "vocab_sizes",
    default=",".join(str(default(VocabConfig, k)) for k in ("unigrams", "bigrams", "trigrams")),
    show_default=True,
    metavar="UNI,BI,TRI",
    help="Top-K unigrams, bigrams, trigrams per text feature.",
)
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
    "--image-dim", default=DEFAULT_IMAGE_DIM, show_default=True, type=click.IntRange(min=1)
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
def train_command(**options: object) -> None:
    """Train an encoder on a catalog (and an engagement log); write a checkpoint directory.

    With --engagements: multi-task training on the log; holds out a deterministic slice of it
    and prints Recall@10 per task on that slice. Without: learns from the catalog's own text and
    images (check the result with `itemsage evaluate-catalog`). Prints loss and examples/s
    while training, then the checkpoint path and its model_version.
    """
    from itemsage_cli.stages import progress
    from itemsage_core.training.model_runs import train_model

    run = _train_run(**options)
    result = train_model(run, progress=progress)
    if result.evaluation:
        click.echo("\n".join(result.evaluation.lines()))
    click.echo(f"model {result.model_version} written to {result.path}")
    if not run.engagements:
        mapping_flag = f" --mapping {run.mapping}" if run.mapping else ""
        click.echo(
            f"check it: itemsage evaluate-catalog --model {result.path} --catalog "
            f"{run.catalog}{mapping_flag} --label-column COLUMN"
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
    **fields: object,
) -> TrainRun:
    """`itemsage train`'s options as a TrainRun: the TrainConfig and TrainRun fields by name,
    the model's shape, the vocabulary sizes; a bad combination is a usage error."""
    from itemsage_core.training.training_examples import parse_tasks

    try:
        uni, bi, tri = (int(x) for x in vocab_sizes.split(","))
    except ValueError:
        raise click.BadParameter(
            f"'{vocab_sizes}' is not three integers UNI,BI,TRI", param_hint="--vocab"
        ) from None
    if d_model % 8:
        raise click.BadParameter(f"{d_model} is not divisible by 8 heads", param_hint="--d-model")
    engagements = fields["engagements"]
    if fields["catalog_task_weight"] and not engagements:
        raise click.UsageError(
            "--catalog-task-weight weighs the catalog objective beside "
            "--engagements; without a log the catalog objective is the "
            "only one"
        )
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(
        epochs=epochs or (default(TrainConfig, "epochs") if engagements else CATALOG_EPOCHS),
        seed=seed,
        tasks=parse_tasks(tasks),
        task_weights=_parse_task_weights(task_weights),
        **{k: v for k, v in fields.items() if k in train_fields},
    )
    model_options = {
        "d_model": d_model,
        "ffn_dim": ffn_dim,
        "layers": layers,
        "mlp_hidden": d_model,
        "hash_buckets": hash_buckets,
        "modalities": tuple(modalities.split(",")),
    }
    return TrainRun(
        out=Path(out_dir),
        train=config,
        model_options=tuple(model_options.items()),
        vocab=VocabConfig(unigrams=uni, bigrams=bi, trigrams=tri),
        hash_seed=seed,
        **{k: v for k, v in fields.items() if k not in train_fields},
    )


def _echo_result(model_version: str, result: object, as_json: bool) -> None:
    """An evaluation's result: one JSON object, or its lines after the model's version."""
    if as_json:
        click.echo(json.dumps({"model_version": model_version, **result.to_dict()}, sort_keys=True))
    else:
        click.echo(f"model {model_version}")
        click.echo("\n".join(result.lines()))


@cli.command("evaluate")
@click.option(
    "--model",
    "model_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Model directory written by `itemsage train`.",
)
@click.option("--catalog", required=True, help="Catalog Parquet: a file, directory or glob.")
@click.option("--engagements", required=True, help="Engagement log Parquet.")
@click.option(
    "--mapping",
    type=click.Path(dir_okay=False),
    default=None,
    help="Column mapping TOML for the catalog.",
)
@click.option(
    "--index-size",
    default=HELDOUT_INDEX_SIZE,
    show_default=True,
    type=click.IntRange(min=1),
    help="Rank among all catalog products up to this many, else a fixed sample.",
)
@click.option("-k", "k", default=RECALL_K, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def evaluate_command(
    model_dir: str,
    catalog: str,
    engagements: str,
    mapping: str | None,
    index_size: int,
    k: int,
    as_json: bool,
) -> None:
    """Recall@K per task and overall on the held-out slice of an engagement log.

    The slice is chosen by the same deterministic rule as in training (docs/model.md), so
    evaluating on the training log measures held-out examples only.
    """
    from itemsage_cli.stages import progress
    from itemsage_core.training.model_runs import evaluate_model

    version, result = evaluate_model(
        Path(model_dir),
        catalog,
        engagements,
        mapping,
        index_size=index_size,
        k=k,
        progress=progress,
    )
    _echo_result(version, result, as_json)


@cli.command("evaluate-catalog")
@click.option(
    "--model",
    "model_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Model directory written by `itemsage train`.",
)
@click.option("--catalog", required=True, help="Catalog Parquet: a file, directory or glob.")
@click.option(
    "--mapping",
    type=click.Path(dir_okay=False),
    default=None,
    help="Column mapping TOML for the catalog.",
)
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
@click.option("-k", "k", default=RECALL_K, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def evaluate_catalog_command(
    model_dir: str,
    catalog: str,
    mapping: str | None,
    label_column: str,
    exclude_features: tuple[str, ...],
    queries: int,
    k: int,
    as_json: bool,
) -> None:
    """How often a product's nearest neighbours share its label, beside TF-IDF and random.

    Exact cosine top-k over every valid product that has a label, for a sample of query
    products; the TF-IDF baseline reads the same text features. Also the share of the
    catalog's words the model's vocabulary knows, per feature. Needs no engagement log.
    """
    from itemsage_cli.stages import progress
    from itemsage_core.training.model_runs import evaluate_catalog_model

    version, result = evaluate_catalog_model(
        Path(model_dir),
        catalog,
        label_column,
        mapping,
        exclude_features,
        queries,
        k,
        progress=progress,
    )
    _echo_result(version, result, as_json)


@cli.command()
@click.option("--catalog", required=True, help="Catalog Parquet: a file, directory or glob.")
@click.option(
    "--model",
    "model_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Model directory written by `itemsage train`.",
)
@click.option(
    "--table",
    "table_uri",
    required=True,
    metavar="TABLE_URI",
    help="Delta table of embeddings (path or s3://, gs://, abfs:// URI); the "
    "quarantine table is TABLE_URI + '_quarantine'.",
)
@click.option(
    "--mapping",
    type=click.Path(dir_okay=False),
    default=None,
    help="Column mapping TOML for the catalog.",
)
@click.option(
    "--run-id",
    default=None,
    help="Run identity for idempotent retries (default: derived from the catalog "
    "files, the model and the mapping).",
)
@click.option(
    "--batch-size",
    default=default(EmbedConfig, "batch_size"),
    show_default=True,
    type=click.IntRange(min=1),
    help="Products per encoder forward pass (independent of Spark's Arrow batches).",
)
@click.option(
    "--precision",
    default=default(EmbedConfig, "precision"),
    show_default=True,
    type=click.Choice(["fp32", "bf16", "fp16", "auto"]),
    help="fp32: the same vectors on CPU and GPU executors. bf16/fp16: autocast "
    "(auto: bf16 on GPU only); on a GPU no faster, as the job is bound by "
    "per-row CPU work, and it moves vectors (BENCHMARKS.md).",
)
@click.option(
    "--writer",
    default=default(EmbedConfig, "writer"),
    show_default=True,
    type=click.Choice(list(COMMITTERS)),
    help="Commit through the deltalake library, or through Delta's Spark connector "
    "where io.delta is on the classpath.",
)
@click.option(
    "--incremental",
    is_flag=True,
    help="Re-encode only new products and those whose inputs or model changed; carry "
    "the rest over; drop products no longer in the catalog.",
)
@click.option(
    "--max-quarantine-share",
    type=click.FloatRange(0, 1),
    default=default(EmbedConfig, "max_quarantine_share"),
    show_default=True,
    help="Leave the table as it is (and exit 1) when the catalog is empty or more than "
    "this share of its rows is quarantined: the sign of a broken export. The "
    "quarantine is still committed. 1 turns the check off.",
)
@click.option(
    "--min-coverage",
    type=click.FloatRange(0, 1),
    default=default(EmbedConfig, "min_coverage"),
    show_default=True,
    help="Warn (and still commit) when the model's vocabulary knows less than this "
    "share of the catalog's words: a model built for other text embeds it "
    "poorly. 0 turns the warning off.",
)
@click.option(
    "--summary-json",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the run summary to this file.",
)
@spark_options
def embed(
    mapping: str | None,
    summary_json: str | None,
    master: str | None,
    conf: tuple[str, ...],
    **options: object,
) -> None:
    """Embed a catalog on Spark and commit the vectors to a Delta table in one transaction.

    Invalid rows go to the quarantine table with their reason; every input row is embedded or
    quarantined. Rerunning the same run commits nothing twice.
    """
    from itemsage_cli import preflight
    from itemsage_cli.stages import progress
    from jobs.embed_catalog import embed_catalog
    from jobs.spark_session import get_spark, parse_conf

    config = EmbedConfig(mapping=preflight.mapping(mapping), **options)
    preflight.catalog_path(config.catalog, config.mapping)
    preflight.model_dir(config.model_dir)
    spark = get_spark("itemsage-embed", master, parse_conf(conf))
    write_summary(embed_catalog(spark, config, progress=progress), summary_json)


def write_summary(summary: dict, summary_json: str | None) -> None:
    """Print the run summary as JSON, and write it to `summary_json` when given."""
    text = json.dumps(summary, indent=2, sort_keys=True)
    if summary_json:
        Path(summary_json).write_text(text + "\n")
    click.echo(text)


@cli.command("vacuum")
@click.option(
    "--table",
    "table_uri",
    required=True,
    metavar="TABLE_URI",
    help="The embeddings Delta table; its quarantine table is vacuumed too.",
)
@click.option(
    "--retention-hours",
    type=click.IntRange(min=0),
    default=168,
    show_default=True,
    help="Keep files younger than this: time travel (`build-index --table-version`) "
    "works this far back, and a job still writing is never touched. Keep it "
    "above your longest embedding run.",
)
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
def vacuum_command(table_uri: str, retention_hours: int, dry_run: bool) -> None:
    """Delete files no longer in the tables' current versions: replaced versions' files and
    the orphans of runs that failed or were killed before committing."""
    from deltalake import DeltaTable

    from itemsage_core.embedding.embeddings_table import quarantine_uri
    from itemsage_core.embedding.embeddings_table import vacuum as vacuum_table

    for uri in (table_uri, quarantine_uri(table_uri)):
        if not DeltaTable.is_deltatable(uri):
            click.echo(f"{uri}: no Delta table, skipped")
            continue
        files = vacuum_table(uri, retention_hours, dry_run)
        verb = "would delete" if dry_run else "deleted"
        click.echo(f"{uri}: {verb} {len(files)} file(s) older than {retention_hours} h")
        for name in files:
            click.echo(f"  {name}")


@cli.command("build-index")
@click.option(
    "--table",
    "table_uri",
    required=True,
    metavar="TABLE_URI",
    help="The embeddings Delta table written by `itemsage embed`.",
)
@click.option(
    "--surfaces",
    "surfaces_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Surfaces config TOML (see conf/surfaces.toml and docs/indexes.md).",
)
@click.option(
    "--out",
    "index_root",
    required=True,
    type=click.Path(file_okay=False),
    metavar="INDEX_ROOT",
    help="Index root: one directory per surface (a path every executor can see).",
)
@click.option(
    "--catalog",
    default=default(BuildIndexConfig, "catalog"),
    help="Catalog Parquet whose columns the surface filters use.",
)
@click.option(
    "--mapping",
    type=click.Path(dir_okay=False),
    default=default(BuildIndexConfig, "mapping"),
    help="Column mapping TOML for the catalog.",
)
@click.option(
    "--table-version",
    type=click.IntRange(min=0),
    default=default(BuildIndexConfig, "table_version"),
    help="Build from this Delta version (default: the latest; recorded in the "
    "manifest), e.g. to reproduce an earlier build.",
)
@click.option(
    "--surface",
    "only",
    multiple=True,
    metavar="NAME",
    help="Build only this surface (repeatable; default: every surface in the config).",
)
@click.option(
    "--summary-json",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the run summary to this file.",
)
@spark_options
def build_index(
    table_uri: str,
    surfaces_path: str,
    index_root: str,
    catalog: str | None,
    mapping: str | None,
    table_version: int | None,
    only: tuple[str, ...],
    summary_json: str | None,
    master: str | None,
    conf: tuple[str, ...],
) -> None:
    """Build per-surface sharded HNSW indexes from the embeddings table and publish them.

    Each surface's build is checked against exact search (recall@10 per shard) before its
    CURRENT pointer moves to it. A surface that cannot be built or published (its filter does
    not apply or matches nothing, its recall gate fails, ...) keeps its current build and gets
    one `error:` line; the others still publish; the exit status is then 1.
    """
    from index_builder.surfaces import load_surfaces
    from itemsage_cli import preflight
    from itemsage_cli.stages import progress
    from jobs.build_indexes import build_indexes
    from jobs.spark_session import get_spark, parse_conf

    surfaces = load_surfaces(surfaces_path, only)
    preflight.table(table_uri)
    config = BuildIndexConfig(
        table_uri, index_root, surfaces, catalog, preflight.mapping(mapping), table_version
    )
    if catalog:
        preflight.catalog_path(catalog, config.mapping)
    spark = get_spark("itemsage-build-index", master, parse_conf(conf))
    summary = build_indexes(spark, config, progress=progress)
    write_summary(summary, summary_json)
    failed = {n: s["reason"] for n, s in summary["surfaces"].items() if s["status"] == "failed"}
    for name, reason in failed.items():
        click.echo(f"error: surface {name!r} not published: {reason}", err=True)
    if failed:
        sys.exit(1)


@cli.command()
@click.option(
    "--index",
    "index_root",
    required=True,
    type=click.Path(file_okay=False),
    metavar="INDEX_ROOT",
    help="Index root written by `itemsage build-index`.",
)
@click.option("--surface", required=True, help="Surface name, e.g. home.")
@click.option("--product-id", default=None, help="Find the products nearest to this one.")
@click.option(
    "--vector-file",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="A query vector: .npy, or text/JSON numbers.",
)
@click.option(
    "-k",
    "k",
    default=default(ShardedIndex.search, "k"),
    show_default=True,
    type=click.IntRange(min=1),
    help="Results to return.",
)
@click.option(
    "--catalog",
    default=None,
    help="Catalog Parquet to describe the products from (--show columns).",
)
@click.option(
    "--mapping",
    type=click.Path(dir_okay=False),
    default=None,
    help="Column mapping TOML for --catalog.",
)
@click.option(
    "--show",
    default="title",
    show_default=True,
    metavar="COLUMNS",
    help="With --catalog: comma-separated catalog columns (after the mapping) shown "
    "beside each product, e.g. title,brand,product_type.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print a JSON list of {"product_id", "score"} (and the --show columns), best first.',
)
def query(
    index_root: str,
    surface: str,
    product_id: str | None,
    vector_file: str | None,
    k: int,
    catalog: str | None,
    mapping: str | None,
    show: str,
    as_json: bool,
) -> None:
    """Query a surface's current index build (checksums verified on load).

    Scores are cosine similarities. With --product-id the product itself is left out.
    If the current build is damaged, the newest usable build answers, with a warning.
    With --catalog, each product is shown with its --show columns, so neighbours can be judged.
    """
    from index_builder.index_reader import load_published, read_vector

    if (product_id is None) == (vector_file is None):
        raise click.UsageError("give exactly one of --product-id and --vector-file")
    if mapping and not catalog:
        raise click.UsageError("--mapping goes with --catalog")
    column_mapping = None
    if catalog:
        from itemsage_core.contracts.column_mapping import load_mapping
        from itemsage_core.storage.parquet_io import parquet_files

        parquet_files(catalog)  # a wrong path fails before the index loads
        column_mapping = load_mapping(mapping) if mapping else None
    index = load_published(index_root, surface, warn=lambda m: click.echo(m, err=True))
    vector = index.vector_of(product_id) if product_id else read_vector(vector_file)
    results = index.search(vector, k, exclude=product_id)
    columns = [c.strip() for c in show.split(",") if c.strip()] if catalog else []
    described = {}
    if catalog:
        from itemsage_core.contracts.catalog_lookup import describe_products

        wanted = [pid for pid, _ in results] + ([product_id] if product_id else [])
        described = describe_products(catalog, column_mapping, wanted, columns)
    if as_json:
        click.echo(
            json.dumps([{"product_id": p, "score": s, **described.get(p, {})} for p, s in results])
        )
        return

    def text(pid: str) -> str:
        row = described.get(pid)
        if row is None:
            return "" if not catalog else "  (not in the catalog)"
        shown = [", ".join(map(str, v)) if isinstance(v, list) else v for v in row.values()]
        return "  " + " | ".join("" if v is None else str(v) for v in shown)

    build = index.manifest
    click.echo(
        f"surface {surface}, build {build['build_id']} (table version "
        f"{build['table']['version']}, {build['products']} products)"
    )
    if product_id and catalog:
        click.echo(f"query  {product_id}{text(product_id)}")
    for rank, (pid, score) in enumerate(results, 1):
        click.echo(f"{rank:>3}  {score:.4f}  {pid}{text(pid)}")


@cli.command("verify-index")
@click.option(
    "--index",
    "index_root",
    required=True,
    type=click.Path(file_okay=False),
    metavar="INDEX_ROOT",
    help="Index root written by `itemsage build-index`.",
)
@click.option(
    "--surface", "surfaces", required=True, multiple=True, help="Surface to check (repeatable)."
)
@click.option(
    "--samples",
    default=default(verify_current, "samples"),
    show_default=True,
    type=click.IntRange(min=1),
    help="Products per surface that must find themselves.",
)
def verify_index(index_root: str, surfaces: tuple[str, ...], samples: int) -> None:
    """Check the CURRENT build of surfaces exactly as serving loads it (exit 1 if unusable).

    Verifies every file's checksum (no fallback to older builds) and that sample products find
    their own vectors first; prints one JSON line per surface.
    """
    from index_builder.index_reader import verify_current

    for surface in surfaces:
        click.echo(json.dumps(verify_current(index_root, surface, samples)))


@cli.command("rollback-index")
@click.option(
    "--index",
    "index_root",
    required=True,
    type=click.Path(file_okay=False),
    metavar="INDEX_ROOT",
    help="Index root written by `itemsage build-index`.",
)
@click.option("--surface", required=True, help="Surface to roll back.")
@click.option(
    "--build",
    "build_id",
    default=None,
    help="Build id to serve (default: the newest complete build older than CURRENT).",
)
def rollback_index(index_root: str, surface: str, build_id: str | None) -> None:
    """Serve an earlier build of a surface: checks every file of it, then moves CURRENT
    atomically. Deletes nothing; the next build-index publishes a new build as usual."""
    from index_builder.index_reader import roll_back

    click.echo(json.dumps(roll_back(index_root, surface, build_id)))


@cli.command()
@click.option(
    "--workdir",
    default=str(default(DemoConfig, "workdir")),
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the demo writes everything.",
)
@click.option(
    "--products",
    default=default(DemoConfig, "products"),
    show_default=True,
    type=click.IntRange(min=500),
    help="Products in the synthetic world.",
)
@click.option(
    "--epochs",
    default=None,
    type=click.IntRange(min=1),
    help="Training epochs of the demo's small encoder (default "
    f"{default(TrainConfig, 'epochs')} on the world's "
    f"engagements, {CATALOG_EPOCHS} on --catalog).",
)
@click.option(
    "--seed", default=default(DemoConfig, "seed"), show_default=True, type=int, help="Random seed."
)
@click.option(
    "--catalog",
    default=None,
    help="Embed and index this catalog instead of the synthetic world's (e.g. the "
    "shared Flipkart sample); needs --surfaces.",
)
@click.option(
    "--mapping",
    type=click.Path(dir_okay=False),
    default=None,
    help="Column mapping TOML for --catalog.",
)
@click.option(
    "--surfaces",
    "surfaces_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Surfaces config (default: conf/surfaces.toml, for the synthetic world).",
)
@click.option(
    "--label-column",
    default=None,
    metavar="COLUMN",
    help="With --catalog: check the model with evaluate-catalog on this column "
    "(e.g. product_type) before embedding.",
)
@spark_options
def demo(
    workdir: str,
    products: int,
    seed: int,
    epochs: int | None,
    catalog: str | None,
    mapping: str | None,
    surfaces_path: str | None,
    label_column: str | None,
    master: str | None,
    conf: tuple[str, ...],
) -> None:
    """Run the whole flow on the embedded local Spark and print where everything went.

    Generate a world, train a small encoder, embed the catalog into Delta, build the
    per-surface indexes, and show nearest neighbours of sample products with their titles and
    categories, then the command for each stage. With --catalog (a real catalog without an
    engagement log), the README's recipe: train on the catalog itself, check it with
    evaluate-catalog (--label-column), then embed and index it.
    """
    from itemsage_cli.demo import demo_flow

    if catalog and not surfaces_path:
        raise click.UsageError("--catalog needs --surfaces (e.g. conf/surfaces-flipkart.toml)")
    if label_column and not catalog:
        raise click.UsageError("--label-column goes with --catalog")
    config = DemoConfig(
        workdir=Path(workdir),
        products=products,
        seed=seed,
        epochs=epochs,
        master=master,
        conf=conf,
        catalog=catalog,
        mapping=mapping,
        label_column=label_column,
        **({"surfaces": surfaces_path} if surfaces_path else {}),
    )
    demo_flow(config)


def main() -> None:
    cli(prog_name="itemsage")


if __name__ == "__main__":
    main()
