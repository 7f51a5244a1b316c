"""Data recipes: generate a synthetic world, validate a catalog and an engagement log (in this
process, or on Spark)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from itemsage_core.contracts.validation_report import ValidationReport
from itemsage_runs.spark import Progress, silent


def generate(
    out: Path,
    products: int,
    seed: int,
    engagements_per_product: float = 5.0,
    progress: Progress = silent,
) -> dict[str, str]:
    """Generate a world into `out`; returns the paths written."""
    from itemsage_core.storage.parquet_io import write_parquet_dataset
    from itemsage_core.synthetic.world import WorldConfig, generate_world

    config = WorldConfig(
        products=products, seed=seed, engagements_per_product=engagements_per_product
    )
    start = time.perf_counter()
    progress(f"generating a world of {products} products (seed {seed})")
    world = generate_world(config)
    paths = {"catalog": str(out / "catalog"), "engagements": str(out / "engagements")}
    progress(f"writing {world.catalog.num_rows} products to {paths['catalog']}")
    write_parquet_dataset(world.catalog, paths["catalog"])
    progress(f"writing {world.engagements.num_rows} engagements to {paths['engagements']}")
    write_parquet_dataset(world.engagements, paths["engagements"], rows_per_file=100_000)
    (out / "world.json").write_text(
        json.dumps(
            {
                "config": vars(config),
                "catalog_rows": world.catalog.num_rows,
                "engagement_rows": world.engagements.num_rows,
            },
            indent=2,
        )
        + "\n"
    )
    progress(f"done in {time.perf_counter() - start:.1f}s")
    return paths


def validate(
    catalog: str,
    mapping: str | None,
    engagements: str | None,
    image_dim: int,
    master: str | None,
    conf: tuple[str, ...] = (),
    spark: bool = False,
    progress: Progress = silent,
) -> list[ValidationReport]:
    """Validate a catalog and (optionally) an engagement log. A local catalog is validated
    in-process with pyarrow; an object-store one, or any with `spark`, a `master`, a `conf` or
    under spark-submit, on Spark. The engagement log is validated in-process."""
    from itemsage_core.contracts.catalog_check import validate_local_catalog
    from itemsage_core.contracts.column_mapping import load_mapping
    from itemsage_core.contracts.engagement_contract import validate_engagements
    from itemsage_core.storage.parquet_io import read_parquet
    from itemsage_core.storage.uris import is_local_path
    from itemsage_runs.spark import spark_session
    from jobs.spark_session import under_spark_submit

    column_mapping = load_mapping(mapping) if mapping else None
    if spark or master or conf or under_spark_submit() or not is_local_path(catalog):
        from jobs.catalog_frame import validate_on_spark

        session = spark_session("itemsage-validate", master, conf)
        progress(f"validating catalog {catalog} on {session.sparkContext.master}")
        reports = [validate_on_spark(session, catalog, column_mapping, image_dim)]
    else:
        progress(f"validating catalog {catalog} in-process")
        reports = [validate_local_catalog(catalog, column_mapping, image_dim)]
    if engagements:
        progress(f"validating engagement log {engagements}")
        reports.append(validate_engagements(read_parquet(engagements), image_dim).report)
    return reports
