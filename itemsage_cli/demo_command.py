"""`itemsage demo`: the whole flow on the embedded local Spark (itemsage_cli/demo.py)."""

from __future__ import annotations

from pathlib import Path

import click

from itemsage_cli.demo_config import DemoConfig
from itemsage_cli.group import cli, spark_options
from itemsage_core.training.config import (
    CATALOG_EPOCHS,
    TrainConfig,
)
from itemsage_runs.defaults import default


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
@click.option(
    "--text-model",
    default=None,
    metavar="DIR_OR_URI",
    help="With --catalog: featurize it first with this sentence-transformers model (a "
    "dense input of the encoder, docs/featurize.md) and add the model as a baseline of the "
    "--label-column check.",
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
    text_model: str | None,
    master: str | None,
    conf: tuple[str, ...],
) -> None:
    """Run the whole flow on the embedded local Spark and print where everything went.

    Generate a world, train a small encoder, embed the catalog into Delta, build the
    per-surface indexes, and show nearest neighbours of sample products with their titles and
    categories, then the command for each stage. With --catalog (a real catalog without an
    engagement log), the README's recipe: featurize it (--text-model), train on the catalog
    itself, check it with evaluate-catalog (--label-column), then embed and index it.
    """
    from itemsage_cli.demo import demo_flow

    if catalog and not surfaces_path:
        raise click.UsageError("--catalog needs --surfaces (e.g. conf/surfaces-flipkart.toml)")
    for flag, given in (("--label-column", label_column), ("--text-model", text_model)):
        if given and not catalog:
            raise click.UsageError(f"{flag} goes with --catalog")
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
        text_model=text_model,
        **({"surfaces": surfaces_path} if surfaces_path else {}),
    )
    demo_flow(config)
