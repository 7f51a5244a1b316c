"""`itemsage`: the command-line interface (a click group; every command has --help).

User mistakes (ItemSageError) print one `error: ...` line on stderr and exit with status 1;
click's own usage errors exit with status 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from itemsage_core.errors import ItemSageError

class ItemSageGroup(click.Group):
    """A click group that turns ItemSageError into one clear line and a non-zero exit."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ItemSageError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=ItemSageGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="itemsage-spark")
def cli():
    """ItemSage on Spark: product embeddings and per-surface nearest-neighbour indexes.

    Run `itemsage COMMAND --help` for a command's options.
    """


def spark_options(fn):
    """--master and repeated --conf k=v, for commands that start Spark."""
    fn = click.option("--conf", "conf", multiple=True, metavar="KEY=VALUE",
                      help="Spark configuration, repeatable (overrides the defaults).")(fn)
    return click.option("--master", default=None, metavar="URL",
                        help="Spark master (default: local[*], or spark-submit's).")(fn)


@cli.command()
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory to write catalog/ and engagements/ into.")
@click.option("--products", default=20_000, show_default=True, type=click.IntRange(min=1),
              help="Number of products.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")
@click.option("--engagements-per-product", default=5.0, show_default=True,
              type=click.FloatRange(min=0), help="Engagement log rows per product.")
def generate(out_dir, products, seed, engagements_per_product):
    """Generate a synthetic shopping world: DIR/catalog/ and DIR/engagements/ (Parquet)."""
    from itemsage_cli.stages import generate_stage
    generate_stage(Path(out_dir), products, seed, engagements_per_product)


@cli.command()
@click.option("--catalog", required=True, help="Catalog Parquet: a file, directory or glob.")
@click.option("--mapping", type=click.Path(dir_okay=False), default=None,
              help="Column mapping TOML (see docs/data-contracts.md).")
@click.option("--engagements", default=None, help="Also validate this engagement log.")
@click.option("--image-dim", default=256, show_default=True, type=click.IntRange(min=1),
              help="Dimension of image and query embeddings.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@spark_options
def validate(catalog, mapping, engagements, image_dim, as_json, master, conf):
    """Check a catalog (and optionally an engagement log) against the data contracts.

    Reports rows, valid and rejected counts and the offending rows per rule. Exits 0 when the
    data is usable (row-level rejections are reported, not fatal) and 1 on a schema-level error.
    """
    from itemsage_cli.stages import validate_stage
    reports = validate_stage(catalog, mapping, engagements, image_dim, master, conf)
    if as_json:
        click.echo(json.dumps({r.contract: r.to_dict() for r in reports}, sort_keys=True))
    else:
        for report in reports:
            click.echo("\n".join(report.lines()))


@cli.command()
@click.option("--workdir", default="itemsage-demo", show_default=True,
              type=click.Path(file_okay=False), help="Where the demo writes everything.")
@click.option("--products", default=20_000, show_default=True, type=click.IntRange(min=100),
              help="Products in the synthetic world.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")
@spark_options
def demo(workdir, products, seed, master, conf):
    """Run the whole flow on the embedded local Spark and print where everything went."""
    from itemsage_cli.stages import demo_flow
    demo_flow(Path(workdir), products, seed, master, conf)


def main() -> None:
    cli(prog_name="itemsage")


if __name__ == "__main__":
    main()
