"""`itemsage generate` and `itemsage validate`: a synthetic world, and data checked against
the contracts."""

from __future__ import annotations

import json
from pathlib import Path

import click

from itemsage_cli.group import catalog_option, cli, json_option, spark_options
from itemsage_core.contracts.catalog_contract import DEFAULT_IMAGE_DIM
from itemsage_core.synthetic.world import WorldConfig
from itemsage_runs.defaults import default


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
    from itemsage_cli.progress import progress
    from itemsage_runs.data import generate

    generate(Path(out_dir), products, seed, engagements_per_product, progress)


@cli.command()
@catalog_option
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
@json_option
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
    from itemsage_cli.progress import progress
    from itemsage_runs.data import validate as validate_inputs

    reports = validate_inputs(
        catalog, mapping, engagements, image_dim, master, conf, use_spark, progress
    )
    if as_json:
        click.echo(json.dumps({r.contract: r.to_dict() for r in reports}, sort_keys=True))
    else:
        for report in reports:
            click.echo("\n".join(report.lines()))
