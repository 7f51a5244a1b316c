"""Training data prepared on Spark (`itemsage prepare-training`, docs/model.md): both inputs
validated, the vocabulary counted, the products encoded and the engagements turned into examples
on the executors, written as shuffled Parquet shards, so that preparing grows with the cluster,
not with one machine. Only counts and the vocabulary reach the driver."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pyarrow as pa
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema

from itemsage_core.contracts.catalog_contract import DEFAULT_IMAGE_DIM, PRODUCT_ID
from itemsage_core.contracts.column_mapping import ColumnMapping
from itemsage_core.contracts.engagement_contract import RULES as ENGAGEMENT_RULES
from itemsage_core.contracts.validation_report import (
    ValidationReport,
    partial_counts,
    summed_report,
)
from itemsage_core.embedding.embed_task import REASON
from itemsage_core.features.text_tokens import KINDS
from itemsage_core.features.vocabulary import (
    COUNTS_SCHEMA,
    FEATURES,
    VocabConfig,
    Vocabulary,
    token_counts,
    vocabulary_from_counts,
)
from itemsage_core.training.prepared_data import (
    CATALOG_PAIR_SCHEMA,
    EXAMPLE_SCHEMA,
    HELDOUT,
    PARTNER,
    PRODUCT_SCHEMA,
    TASK,
    TASK_COUNTS,
    TASKS,
    TRAIN_SCHEMA,
    PrepareConfig,
    example_rows,
    product_rows,
    task_names,
    write_prepared_manifest,
)
from jobs.catalog_frame import catalog_files, catalog_ids, repeated_ids, with_reasons
from jobs.lexical_neighbours import lexical_neighbours_on_spark
from jobs.spark_failures import spark_failures

REPORT = "_report"
# Products and examples carry their image vectors (~4 KB a row): cached on disk, so that the
# JVM's heap stays free for the shuffles and sorts (in memory they made a 4 GB local JVM run out
# of heap at 200k products).
CACHED = StorageLevel.DISK_ONLY  # the column carrying each engagement batch's validation counts


def valid_products(
    spark: SparkSession,
    catalog: str,
    mapping: ColumnMapping | None = None,
    image_dim: int = DEFAULT_IMAGE_DIM,
) -> DataFrame:
    """The catalog's valid rows, mapped and conformed (the rows validate_catalog keeps: the
    duplicate rule over the whole catalog)."""
    repeated = repeated_ids(catalog_ids(spark, catalog, mapping))
    checked = with_reasons(spark, catalog, mapping, repeated, image_dim)
    return checked.where(F.col(REASON).isNull()).drop(REASON)


def vocabulary_on_spark(products: DataFrame, config: VocabConfig = VocabConfig()) -> Vocabulary:
    """The vocabulary of conformed `products`, as build_vocabulary makes it in one process: each
    task counts its batches' tokens (token_counts), Spark sums the counts and ranks each feature
    and kind's tokens (most frequent first, ties by text, as vocabulary_from_counts does), and
    only the first `limit` of each are collected."""

    def count(batches):
        for batch in batches:
            yield from token_counts(batch).to_batches()

    counts = products.select(*FEATURES).mapInArrow(count, from_arrow_schema(COUNTS_SCHEMA))
    summed = (
        counts.groupBy("feature", "kind", "token")
        .agg(F.sum("count").alias("count"))
        .where(F.col("count") >= config.min_count)
    )
    order = Window.partitionBy("feature", "kind").orderBy(F.desc("count"), F.asc("token"))
    limit = F.lit(0)
    for kind in KINDS:
        limit = F.when(F.col("kind") == kind, F.lit(config.limit(kind))).otherwise(limit)
    top = summed.withColumn("rank", F.row_number().over(order)).where(F.col("rank") <= limit)
    collected = top.select(*COUNTS_SCHEMA.names).toArrow()
    return vocabulary_from_counts(collected.cast(COUNTS_SCHEMA), config)


def _example_task(holdout_fraction: float, query_dim: int):
    """A task writing EXAMPLE_SCHEMA rows of its engagement batches, then one row per batch
    that holds only the batch's validation report (as JSON)."""

    def run(batches):
        for batch in batches:
            rows, report = example_rows(batch, holdout_fraction, query_dim)
            yield from rows.append_column(REPORT, pa.nulls(rows.num_rows, pa.string())).to_batches()
            yield pa.RecordBatch.from_pylist(
                [{REPORT: json.dumps(partial_counts(report))}],
                schema=EXAMPLE_SCHEMA.append(pa.field(REPORT, pa.string())),
            )

    return run


def _product_task(vocab: Vocabulary, image_dim: int):
    def run(batches):
        for batch in batches:
            yield from product_rows(batch, vocab, image_dim).to_batches()

    return run


def _report_of(examples: DataFrame) -> ValidationReport:
    """The engagement log's ValidationReport: the sum of its batches' partials."""
    parts = examples.where(F.col(REPORT).isNotNull()).select(REPORT).collect()
    return summed_report("engagements", ENGAGEMENT_RULES, [json.loads(p[0]) for p in parts])


def prepare_training(spark: SparkSession, config: PrepareConfig, progress=print) -> dict:
    """Validate both inputs, count the vocabulary, encode the products and split the examples
    on the executors; write them as shuffled Parquet shards under `config.out` with the
    vocabulary and a manifest (counts, files, checksums), written last. The data is written
    beside `out` and moved into place once complete: a failed run leaves `out` as it was.
    Returns the manifest."""
    started = time.perf_counter()
    out = Path(config.out)
    staging = out.with_name(f".{out.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        left = f"{out} was left as it was"
        with spark_failures("preparing the training data", left):
            shards = config.shards or spark.sparkContext.defaultParallelism
            valid, products, vocab, counts = _write_products(
                spark, config, staging, shards, progress
            )
            if config.neighbours:
                counts.update(
                    _write_catalog_pairs(config, staging, shards, valid, products, counts)
                )
            valid.unpersist()
            if config.engagements:
                counts.update(_write_examples(spark, config, staging, shards, products))
            products.unpersist()
        vocab.save(staging / "vocab.json")
        seconds = time.perf_counter() - started
        manifest = write_prepared_manifest(staging, config, vocab, counts, seconds)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _replace(out, staging)
    progress(
        f"prepared {counts.get('train_examples', 0)} training examples"
        + (f" and {counts['catalog_pairs']} catalog pairs" if config.neighbours else "")
        + f" in {out}"
    )
    return manifest


def _write_products(
    spark: SparkSession, config: PrepareConfig, staging: Path, shards: int, progress
) -> tuple[DataFrame, DataFrame, Vocabulary, dict]:
    """Write the valid products' encoder inputs; returns the valid products and their encoder
    inputs (both cached, for what follows), the vocabulary and the catalog's counts."""
    products = valid_products(spark, config.catalog, config.mapping, config.image_dim)
    products.persist(CACHED)
    counts = {
        "catalog_rows": catalog_files(spark, config.catalog).count(),
        "valid_products": products.count(),
    }
    vocab = vocabulary_on_spark(products, config.vocab)
    progress(f"vocabulary of {vocab.size} tokens over {counts['valid_products']} valid products")
    encoded = products.mapInArrow(
        _product_task(vocab, config.image_dim), from_arrow_schema(PRODUCT_SCHEMA)
    )
    encoded = encoded.persist(CACHED)
    encoded.repartition(shards).write.parquet(str(staging / "products"))
    return products, encoded, vocab, counts


def _write_catalog_pairs(
    config: PrepareConfig,
    staging: Path,
    shards: int,
    valid: DataFrame,
    encoded: DataFrame,
    counts: dict,
) -> dict:
    """Write `pairs_per_product` catalog pairs per product, each with one of its lexical
    neighbours drawn at random (itself when it has none), both products' encoder inputs in
    the row (CATALOG_PAIR_SCHEMA), shuffled; returns their counts."""
    near = lexical_neighbours_on_spark(
        valid, counts["valid_products"], config.neighbours, config.neighbour_max_df
    ).persist(CACHED)
    draws = F.posexplode(F.array_repeat(F.lit(0), config.pairs_per_product)).alias("draw", "_")
    drawn = encoded.select(PRODUCT_ID).select(PRODUCT_ID, draws).join(near, PRODUCT_ID, "left")
    # a neighbour drawn by a hash of (product, draw, seed): the same on every run and retry
    pick = F.pmod(F.xxhash64(PRODUCT_ID, "draw", F.lit(config.seed)), F.size("neighbours"))
    partner = F.coalesce(F.get(F.col("neighbours"), pick.cast("int")), F.col(PRODUCT_ID))
    pairs = drawn.select(PRODUCT_ID, partner.alias("partner"))
    partner_inputs = encoded.select(
        *(F.col(name).alias(PARTNER + name) for name in PRODUCT_SCHEMA.names)
    )
    rows = pairs.join(encoded, PRODUCT_ID).join(
        partner_inputs, F.col("partner") == F.col(PARTNER + PRODUCT_ID)
    )
    _shuffled(rows.select(*CATALOG_PAIR_SCHEMA.names), shards, config.seed).write.parquet(
        str(staging / "catalog_pairs")
    )
    written = (
        near.select(F.size("neighbours").alias("k"))
        .agg(F.count("*").alias("with"), F.avg("k").alias("mean"))
        .first()
    )
    near.unpersist()
    return {
        "catalog_pairs": counts["valid_products"] * config.pairs_per_product,
        "products_with_neighbours": written["with"],
        "mean_neighbours": float(written["mean"] or 0.0),
    }


def _write_examples(
    spark: SparkSession, config: PrepareConfig, staging: Path, shards: int, products: DataFrame
) -> dict:
    """Write the held-out examples and the training examples, each with its product's encoder
    inputs and task counts (TRAIN_SCHEMA: a training step needs no other lookup), shuffled;
    returns the engagement log's counts."""
    raw = spark.read.parquet(config.engagements)
    examples = raw.mapInArrow(
        _example_task(config.holdout_fraction, config.query_dim),
        from_arrow_schema(EXAMPLE_SCHEMA.append(pa.field(REPORT, pa.string()))),
    ).persist(CACHED)
    log = _report_of(examples)
    rows = examples.where(F.col(REPORT).isNull()).drop(REPORT)
    known = rows.join(products.select(PRODUCT_ID), PRODUCT_ID, "left_semi")
    heldout = known.where(F.col(HELDOUT)).drop(HELDOUT)
    _shuffled(heldout, shards, config.seed).write.parquet(str(staging / "heldout"))
    train = known.where(~F.col(HELDOUT)).drop(HELDOUT)
    per_task_of_product = [F.sum((F.col(TASK) == t).cast("int")) for t in range(len(TASKS))]
    task_counts = train.groupBy(PRODUCT_ID).agg(
        F.array(*per_task_of_product).cast("array<int>").alias(TASK_COUNTS)
    )
    joined = train.join(products, PRODUCT_ID).join(task_counts, PRODUCT_ID)
    _shuffled(joined.select(*TRAIN_SCHEMA.names), shards, config.seed).write.parquet(
        str(staging / "train")
    )
    written = spark.read.parquet(str(staging / "train"))
    per_task = {r[TASK]: r["count"] for r in written.groupBy(TASK).count().collect()}
    heldout_count = spark.read.parquet(str(staging / "heldout")).count()
    examples.unpersist()
    return {
        "engagement_rows": log.rows,
        "valid_engagements": log.valid,
        "rejected_engagements": log.rule_counts,
        # the valid engagements not written as examples: their product is not a valid one
        "unknown_product_engagements": log.valid - sum(per_task.values()) - heldout_count,
        "train_examples": sum(per_task.values()),
        "heldout_examples": heldout_count,
        "train_task_counts": task_names(per_task),
    }


def _shuffled(rows: DataFrame, shards: int, seed: int) -> DataFrame:
    """`rows` in `shards` partitions, in a random order within each (the files' row order)."""
    return rows.repartition(shards).sortWithinPartitions(F.rand(seed))


def _replace(out: Path, staging: Path) -> None:
    """Put the complete `staging` directory in place of `out` (the previous data is removed only
    once the new data is in place)."""
    previous = out.with_name(f".{out.name}.previous")
    shutil.rmtree(previous, ignore_errors=True)
    if out.exists():
        out.rename(previous)
    staging.rename(out)
    shutil.rmtree(previous, ignore_errors=True)
