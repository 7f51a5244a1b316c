"""`itemsage featurize`: a sentence embedding per product, written beside the catalog's columns."""

from __future__ import annotations

import click

from itemsage_cli.group import (
    catalog_option,
    cli,
    mapping_option,
    spark_options,
    summary_json_option,
    write_summary,
)
from itemsage_core.embedding.featurize_run import FeaturizeConfig
from itemsage_runs.defaults import default


@cli.command()
@catalog_option
@mapping_option
@click.option(
    "--text-model",
    required=True,
    metavar="DIR_OR_URI",
    help="A sentence-transformers model folder (modules.json, safetensors weights), or its "
    "s3:// / gs:// / abfs:// URI (fetched once per machine into $ITEMSAGE_CACHE_DIR/models). "
    "Nothing is downloaded from a model hub.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Output directory: the valid rows' own columns plus text_embedding and "
    "text_embedding_source_hash (Parquet), mapping.toml, _featurize.json, _quarantine/. "
    "Replaced only when the run is complete.",
)
@click.option(
    "--features",
    default=None,
    metavar="NAME,...",
    help="Text features embedded, after the mapping (e.g. title,brand). Default: every "
    "contract text feature the mapped catalog has; leave out a column you evaluate against.",
)
@click.option(
    "--batch-size",
    default=default(FeaturizeConfig, "batch_size"),
    show_default=True,
    type=click.IntRange(min=1),
    help="Texts per forward pass.",
)
@click.option(
    "--image-dim",
    default=default(FeaturizeConfig, "image_dim"),
    show_default=True,
    type=click.IntRange(min=1),
    help="Image vector dimension the catalog contract checks (rows that break it are quarantined).",
)
@click.option(
    "--max-quarantine-share",
    type=click.FloatRange(0, 1),
    default=default(FeaturizeConfig, "max_quarantine_share"),
    show_default=True,
    help="Leave OUT as it is (and exit 1) when the catalog is empty or more than this share "
    "of its rows is quarantined. 1 turns the check off.",
)
@summary_json_option
@spark_options
def featurize(
    mapping: str | None,
    features: str | None,
    summary_json: str | None,
    master: str | None,
    conf: tuple[str, ...],
    **options: object,
) -> None:
    """Embed each product's text with a sentence-transformers model, on Spark.

    Writes OUT: the catalog's valid rows with a unit-length text_embedding, and
    OUT/mapping.toml, so that `itemsage train --catalog OUT --mapping OUT/mapping.toml` reads
    the vectors. Invalid rows go to OUT/_quarantine with their reason. A rerun encodes only
    texts the previous OUT (same model and features) does not hold.
    """
    from itemsage_cli.progress import progress
    from itemsage_runs import preflight
    from itemsage_runs.embed import featurize as featurize_run

    chosen = tuple(f.strip() for f in features.split(",") if f.strip()) if features else None
    config = FeaturizeConfig(
        mapping=preflight.mapping(mapping), mapping_path=mapping, features=chosen, **options
    )
    write_summary(featurize_run(config, master, conf, progress), summary_json)
