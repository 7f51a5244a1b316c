"""Recipes of the Spark jobs over a catalog: `embed` (vectors into the Delta table) and
`featurize` (a sentence embedding per product beside the catalog's columns)."""

from __future__ import annotations

from itemsage_core.embedding.embed_run import EmbedConfig
from itemsage_core.embedding.featurize_run import FeaturizeConfig
from itemsage_runs import preflight
from itemsage_runs.spark import Progress, silent, spark_session


def embed(
    config: EmbedConfig,
    master: str | None = None,
    conf: tuple[str, ...] = (),
    progress: Progress = silent,
) -> dict:
    """Embed the catalog into the table (one Delta transaction); the run summary."""
    from jobs.embed_catalog import embed_catalog

    preflight.catalog_path(config.catalog, config.mapping)
    preflight.model_dir(config.model_dir)
    preflight.writable(config.table_uri, "--table")
    spark = spark_session("itemsage-embed", master, conf)
    return embed_catalog(spark, config, progress=progress)


def featurize(
    config: FeaturizeConfig,
    master: str | None = None,
    conf: tuple[str, ...] = (),
    progress: Progress = silent,
) -> dict:
    """Write the featurized catalog and its mapping to `config.out`; the run summary."""
    from itemsage_core.embedding.featurize_run import check_out
    from itemsage_core.features.sentence_text import check_model_dir
    from itemsage_core.storage.uris import is_local_path
    from jobs.featurize_job import featurize as featurize_job

    check_out(config.out)
    preflight.writable(config.out, "--out")
    preflight.catalog_path(config.catalog, config.mapping)
    if is_local_path(config.text_model):  # a cheap mistake fails before Spark starts
        check_model_dir(config.text_model)
    spark = spark_session("itemsage-featurize", master, conf)
    return featurize_job(spark, config, progress=progress)
