"""`itemsage report`: the run report, a static HTML page with PNG plots (itemsage_report)."""

from __future__ import annotations

import click

from itemsage_cli.group import cli, index_root_option
from itemsage_cli.progress import progress
from itemsage_report import QUERIES

REPORT_FOLDER = "_report"  # under INDEX_ROOT unless --out says otherwise


def report_location(index_root: str) -> str:
    """Where a report of `index_root` goes by default: beside its surfaces."""
    return f"{index_root.rstrip('/')}/{REPORT_FOLDER}"


@cli.command("report")
@index_root_option
@click.option(
    "--table",
    "table_uri",
    metavar="TABLE_URI",
    default=None,
    help="Delta table of embeddings whose runs are shown [default: the one the published "
    "builds were built from].",
)
@click.option(
    "--model",
    "model_dir",
    metavar="DIR_OR_URI",
    default=None,
    help="Model directory or URI: adds its training loss and held-out recall per task.",
)
@click.option(
    "--out",
    default=None,
    help="Folder or object-store prefix for index.html, report.json and the plots "
    f"[default: INDEX_ROOT/{REPORT_FOLDER}].",
)
@click.option(
    "--surface",
    "surfaces",
    multiple=True,
    help="Surface to show (repeatable) [default: all published].",
)
@click.option(
    "--queries",
    default=QUERIES,
    show_default=True,
    type=click.IntRange(min=1),
    help="Products per surface sampled as queries for recall@10 and queries/s.",
)
def report_command(
    index_root: str,
    table_uri: str | None,
    model_dir: str | None,
    out: str | None,
    surfaces: tuple[str, ...],
    queries: int,
    cache_dir: str | None,
) -> None:
    """Write a run report: a static HTML page with PNG plots that opens from disk.

    Per published surface: recall@10 against queries/s as ef_search (nprobe for ivf-pq) varies,
    measured on sampled products against exact search, with the published setting marked; shard
    sizes; the scores of the first and tenth neighbours. From the table's Delta history: products,
    quarantined rows and products/s per embedding run. From --model: the training loss and the
    held-out recall per task. The figures are also written as report.json.
    """
    from itemsage_report.report import write_report
    from itemsage_runs import preflight

    folder = out or report_location(index_root)
    preflight.writable(folder, "--out")
    written = write_report(
        index_root, folder, table_uri, model_dir,
        list(surfaces) or None, queries, progress, cache_dir,
    )  # fmt: skip
    click.echo(f"report: {written['page']}")
