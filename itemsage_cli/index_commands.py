"""`itemsage build-index`, `query`, `verify-index` and `rollback-index`: the per-surface
indexes."""

from __future__ import annotations

import json
import sys

import click

from index_builder.index_reader import verify_current
from itemsage_cli.group import (
    cli,
    index_root_option,
    mapping_option,
    spark_options,
    summary_json_option,
    write_summary,
)
from itemsage_cli.progress import progress
from itemsage_runs.defaults import default
from itemsage_runs.indexes import BuildRequest, NeighboursRequest
from itemsage_runs.query import QueryRequest


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
    metavar="INDEX_ROOT",
    help="Index root, one directory per surface: a local path in local mode; on a cluster an "
    "object-store URI (s3://, gs://, abfs://, hdfs://) or a shared mount.",
)
@click.option(
    "--catalog",
    default=default(BuildRequest, "catalog"),
    help="Catalog Parquet whose columns the surface filters use.",
)
@click.option(
    "--mapping",
    type=click.Path(dir_okay=False),
    default=default(BuildRequest, "mapping"),
    help="Column mapping TOML for the catalog.",
)
@click.option(
    "--table-version",
    type=click.IntRange(min=0),
    default=default(BuildRequest, "table_version"),
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
    "--incremental/--full",
    default=default(BuildRequest, "incremental"),
    show_default=True,
    help="--incremental: apply the table's changes since each surface's current build to it "
    "(rebuilding a surface that cannot be refreshed, and saying why); --full: rebuild.",
)
@summary_json_option
@spark_options
def build_index(summary_json: str | None, **options: object) -> None:
    """Build per-surface sharded HNSW indexes from the embeddings table and publish them.

    Each surface's build is loaded as queries load it and its served recall@10 checked against
    exact search (its "auto" search settings tuned first) before its CURRENT pointer moves to
    it. A surface that cannot be built or published (its filter does
    not apply or matches nothing, its recall gate fails, ...) keeps its current build and gets
    one `error:` line; the others still publish; the exit status is then 1.
    """
    from itemsage_runs.indexes import BuildRequest, build_index, failed_surfaces

    summary = build_index(BuildRequest(**options), progress=progress)
    write_summary(summary, summary_json)
    failed = failed_surfaces(summary)
    for name, reason in failed.items():
        click.echo(f"error: surface {name!r} not published: {reason}", err=True)
    if failed:
        sys.exit(1)


def query_file(flag: str, help: str):
    """An option naming an existing file of queries."""
    return click.option(flag, type=click.Path(dir_okay=False, exists=True), help=help)


@cli.command()
@index_root_option
@click.option("--surface", required=True, help="Surface name, e.g. home.")
@click.option("--product-id", default=None, help="Find the products nearest to this one.")
@query_file("--vector-file", "A query vector: .npy, or text/JSON numbers.")
@click.option(
    "-k",
    "k",
    default=default(QueryRequest, "k"),
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
@query_file(
    "--ids-file",
    "Batch: the products nearest to each of these (one id per line, or Parquet with a "
    "product_id column); each product itself is left out. An id the surface does not serve "
    "gets a row with no neighbours and an `error`, and a warning on stderr.",
)
@click.option(
    "--strict",
    is_flag=True,
    help="With --ids-file: an id the surface does not serve fails the whole batch (exit 1, "
    "nothing written) instead of getting an error row.",
)
@query_file(
    "--vectors-file",
    "Batch: query vectors (.npy matrix, or Parquet with an `embedding` list column and "
    "optionally product_id naming each row).",
)
@click.option(
    "--out",
    default=None,
    metavar="FILE",
    help="Batch: write one row per query (query; neighbours, a list of {product_id, score}; "
    "error, null or why the id got no neighbours) to FILE: Parquet if it ends in .parquet, "
    "else JSON lines (default: JSON lines on stdout).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=default(QueryRequest, "threads"),
    show_default="the machine's cores",
    help="Batch: threads searching (shards in parallel, queries within a shard).",
)
def query(**options: object) -> None:
    """Query a surface's current index build (checksums verified on load).

    Scores are cosine similarities. With --product-id the product itself is left out.
    If the current build is damaged, the newest usable build answers, with a warning.
    With --catalog, each product is shown with its --show columns, so neighbours can be judged.
    With --ids-file or --vectors-file, every query of the file is answered in one batch.
    """
    from index_builder.batch_io import write_neighbours
    from itemsage_runs.query import QueryRequest, query

    request = QueryRequest(**options)
    answer = query(request, warn=lambda m: click.echo(m, err=True))
    if answer.batch is not None:
        if request.out:
            click.echo(
                f"wrote the top {request.k} of {answer.batch.num_rows} queries to {request.out}",
                err=True,
            )
        else:
            write_neighbours(answer.batch, None)
    elif request.as_json:
        rows = [
            {"product_id": p, "score": s, **answer.described.get(p, {})} for p, s in answer.results
        ]
        click.echo(json.dumps(rows))
    else:
        _echo_answer(request, answer)


def _echo_answer(request, answer) -> None:
    """One query's neighbours, ranked, with their catalog columns."""

    def text(pid: str) -> str:
        row = answer.described.get(pid)
        if row is None:
            return "" if not request.catalog else "  (not in the catalog)"
        shown = [", ".join(map(str, v)) if isinstance(v, list) else v for v in row.values()]
        return "  " + " | ".join("" if v is None else str(v) for v in shown)

    build = answer.manifest
    click.echo(
        f"surface {request.surface}, build {build['build_id']} (table version "
        f"{build['table']['version']}, {build['products']} products)"
    )
    if request.product_id and request.catalog:
        click.echo(f"query  {request.product_id}{text(request.product_id)}")
    for rank, (pid, score) in enumerate(answer.results, 1):
        click.echo(f"{rank:>3}  {score:.4f}  {pid}{text(pid)}")


@cli.command()
@index_root_option
@click.option(
    "--surface",
    "surfaces",
    required=True,
    multiple=True,
    metavar="NAME",
    help="Surface whose products get their neighbours (repeatable).",
)
@click.option(
    "--out",
    "out_root",
    required=True,
    metavar="TABLES_ROOT",
    help="Where the Delta tables go, one per surface: TABLES_ROOT/<surface> (a path or an "
    "object-store URI).",
)
@click.option(
    "-k",
    "k",
    default=default(NeighboursRequest, "k"),
    show_default=True,
    type=click.IntRange(min=1, max=1000),
    help="Neighbours per product.",
)
@click.option(
    "--build",
    "build_id",
    default=None,
    metavar="BUILD_ID",
    help="Use this build instead of the current one (one --surface only).",
)
@click.option(
    "--surfaces",
    "surfaces_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Surfaces config TOML: applies each surface's neighbours_exclude_same (neighbours "
    "sharing the product's value in those catalog columns are left out; needs --catalog).",
)
@click.option(
    "--catalog",
    default=default(NeighboursRequest, "catalog"),
    help="Catalog Parquet whose columns neighbours_exclude_same names.",
)
@mapping_option
@summary_json_option
@spark_options
def neighbours(summary_json: str | None, **options: object) -> None:
    """Write every product's top k neighbours in a surface's index build to a Delta table.

    One row per product the build serves: product_id, neighbours (a list of product_id and
    cosine score, best first, the product itself left out), build_id, table_version and k,
    committed in one transaction. With --surfaces, a surface's neighbours_exclude_same columns
    (read from --catalog) filter the neighbours. A rerun for the same build, k and filters
    commits nothing; a killed run leaves the table's previous version.
    """
    from itemsage_runs.indexes import NeighboursRequest, write_neighbours

    summary = write_neighbours(NeighboursRequest(**options), progress=progress)
    write_summary(summary, summary_json)


@cli.command("verify-index")
@index_root_option
@click.option(
    "--surface", "surfaces", required=True, multiple=True, help="Surface to check (repeatable)."
)
@click.option(
    "--samples",
    default=default(verify_current, "samples"),
    show_default=True,
    type=click.IntRange(min=1),
    help="Products per surface, drawn at random, that must find themselves.",
)
@click.option(
    "--seed",
    default=default(verify_current, "seed"),
    show_default=True,
    type=int,
    help="Seed of the products drawn.",
)
def verify_index(
    index_root: str, surfaces: tuple[str, ...], samples: int, seed: int, cache_dir: str | None
) -> None:
    """Check the CURRENT build of surfaces exactly as serving loads it (exit 1 if unusable).

    Verifies every file's checksum (no fallback to older builds) and that products drawn at
    random over the whole build find their own vectors first (or a duplicate's: the same
    vector), and measures its served recall@10 on the gate's sample; prints one JSON line per
    surface.
    """
    for surface in surfaces:
        click.echo(json.dumps(verify_current(index_root, surface, samples, cache_dir, seed)))


@cli.command("rollback-index")
@index_root_option
@click.option("--surface", required=True, help="Surface to roll back.")
@click.option(
    "--build",
    "build_id",
    default=None,
    help="Build id to serve (default: the newest complete build older than CURRENT).",
)
def rollback_index(
    index_root: str, surface: str, build_id: str | None, cache_dir: str | None
) -> None:
    """Serve an earlier build of a surface: checks every file of it, then moves CURRENT
    atomically. Deletes no complete build; the next build-index publishes a new build as
    usual."""
    from index_builder.index_reader import roll_back

    click.echo(json.dumps(roll_back(index_root, surface, build_id, cache_dir)))
