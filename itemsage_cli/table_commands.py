"""`itemsage embed` and `itemsage vacuum`: the embeddings table."""

from __future__ import annotations

import click

from itemsage_cli.group import (
    catalog_option,
    cli,
    mapping_option,
    model_dir_option,
    spark_options,
    summary_json_option,
    write_summary,
)
from itemsage_core.embedding.embed_run import EmbedConfig
from itemsage_runs.defaults import default
from jobs.embed_committers import COMMITTERS


@cli.command()
@catalog_option
@model_dir_option
@click.option(
    "--table",
    "table_uri",
    required=True,
    metavar="TABLE_URI",
    help="Delta table of embeddings (path or s3://, gs://, abfs:// URI); the "
    "quarantine table is TABLE_URI + '_quarantine'.",
)
@mapping_option
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
@summary_json_option
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
    from itemsage_cli.progress import progress
    from itemsage_runs import preflight
    from itemsage_runs.embed import embed as embed_run

    config = EmbedConfig(mapping=preflight.mapping(mapping), **options)
    write_summary(embed_run(config, master, conf, progress), summary_json)


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
