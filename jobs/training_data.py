"""Training data prepared on Spark (`itemsage prepare-training`, docs/model.md): both inputs
validated, the vocabulary counted, the products encoded and the engagements turned into examples
on the executors, written as shuffled Parquet shards by the tasks themselves (pyarrow: a local
disk or an object store, no Hadoop connector), so that preparing grows with the cluster, not with
one machine. Only counts, file descriptions and the vocabulary reach the driver."""

from __future__ import annotations

import contextlib
import json
import time

import pyarrow as pa
from pyspark import StorageLevel, TaskContext
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
from itemsage_core.storage.store import Store
from itemsage_core.training.config import PrepareConfig
from itemsage_core.training.prepared_data import (
    CATALOG_PAIR_SCHEMA,
    EXAMPLE_SCHEMA,
    HELDOUT,
    HELDOUT_SCHEMA,
    PARTNER,
    PRODUCT_SCHEMA,
    TASK,
    TASK_COUNTS,
    TASKS,
    TRAIN_SCHEMA,
    VOCAB,
    example_rows,
    new_run,
    product_rows,
    remove_other_runs,
    task_names,
    write_part,
    write_prepared_manifest,
)
from jobs.catalog_frame import catalog_ids, repeated_ids, with_reasons
from jobs.lexical_neighbours import lexical_neighbours_on_spark
from jobs.parquet_frame import parquet_frame
from jobs.spark_failures import spark_failures

REPORT = "_report"
# Products and examples carry their image vectors (~4 KB a row): cached on disk, so that the
# JVM's heap stays free for the shuffles and sorts (in memory they made a 4 GB local JVM run out
# of heap at 200k products).
CACHED = StorageLevel.DISK_ONLY  # the column carrying each engagement batch's validation counts
DESCRIPTION = "path string, rows long, bytes long, sha256 string"  # write_part's, per file


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


class _PartWriter:
    """Writes the parts of one preparation into its run folder `root` (a path or a URI), each
    partition by its own task through pyarrow; keeps the files' descriptions (write_part)."""

    def __init__(self, root: str):
        self.root, self.files = root, []

    def write(self, rows: DataFrame, schema: pa.Schema, part: str) -> list[dict]:
        """Write each partition of `rows` as `schema`, one file part/part-NNNNN-ATTEMPT.parquet
        per partition, even an empty one (a retried task writes its own file: only the
        descriptions collected name the files of the data); returns their descriptions."""
        root = self.root

        def task(batches):
            context = TaskContext.get()
            key = f"{part}/part-{context.partitionId():05d}-{context.taskAttemptId()}.parquet"
            yield pa.RecordBatch.from_pylist([write_part(batches, schema, root, key)])

        described = rows.select(*schema.names).mapInArrow(task, DESCRIPTION).collect()
        written = [row.asDict() for row in described]
        self.files += written
        return written


def prepare_training(spark: SparkSession, config: PrepareConfig, progress=print) -> dict:
    """Validate both inputs, count the vocabulary, encode the products and split the examples
    on the executors; write them as shuffled Parquet shards, with the vocabulary, into a new run
    folder under `config.out` (a path or a URI), then the manifest (counts, files, checksums),
    which makes them the data, then remove the earlier runs' folders. A failed or killed run
    leaves the previous data and its manifest as they were. Returns the manifest."""
    started = time.perf_counter()
    run = new_run()
    writer = _PartWriter(Store(config.out).path(run))
    try:
        with spark_failures("preparing the training data", f"{config.out} was left as it was"):
            shards = config.shards or spark.sparkContext.defaultParallelism
            valid, products, vocab, counts = _write_products(
                spark, config, writer, shards, progress
            )
            if config.neighbours:
                counts.update(_write_catalog_pairs(config, writer, shards, valid, products, counts))
            valid.unpersist()
            if config.engagements:
                counts.update(_write_examples(spark, config, writer, shards, products))
            products.unpersist()
        Store(writer.root).write_bytes(VOCAB, vocab.to_json().encode())
        seconds = time.perf_counter() - started
        manifest = write_prepared_manifest(
            config.out, run, writer.files, config, vocab, counts, seconds
        )
    except BaseException:
        with contextlib.suppress(OSError):
            Store(writer.root).delete("")
        raise
    remove_other_runs(config.out, run)
    progress(
        f"prepared {counts.get('train_examples', 0)} training examples"
        + (f" and {counts['catalog_pairs']} catalog pairs" if config.neighbours else "")
        + f" in {config.out}"
    )
    return manifest


def _write_products(
    spark: SparkSession, config: PrepareConfig, writer: _PartWriter, shards: int, progress
) -> tuple[DataFrame, DataFrame, Vocabulary, dict]:
    """Write the valid products' encoder inputs; returns the valid products and their encoder
    inputs (both cached, for what follows), the vocabulary and the catalog's counts."""
    products = valid_products(spark, config.catalog, config.mapping, config.image_dim)
    products.persist(CACHED)
    counts = {
        "catalog_rows": parquet_frame(spark, config.catalog).count(),
        "valid_products": products.count(),
    }
    vocab = vocabulary_on_spark(products, config.vocab)
    progress(f"vocabulary of {vocab.size} tokens over {counts['valid_products']} valid products")
    encoded = products.mapInArrow(
        _product_task(vocab, config.image_dim), from_arrow_schema(PRODUCT_SCHEMA)
    )
    encoded = encoded.persist(CACHED)
    writer.write(encoded.repartition(shards), PRODUCT_SCHEMA, "products")
    return products, encoded, vocab, counts


def _write_catalog_pairs(
    config: PrepareConfig,
    writer: _PartWriter,
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
    shuffled = _shuffled(rows.select(*CATALOG_PAIR_SCHEMA.names), shards, config.seed)
    writer.write(shuffled, CATALOG_PAIR_SCHEMA, "catalog_pairs")
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
    spark: SparkSession,
    config: PrepareConfig,
    writer: _PartWriter,
    shards: int,
    products: DataFrame,
) -> dict:
    """Write the held-out examples and the training examples, each with its product's encoder
    inputs and task counts (TRAIN_SCHEMA: a training step needs no other lookup), shuffled;
    returns the engagement log's counts."""
    raw = parquet_frame(spark, config.engagements, "engagement log Parquet")
    examples = raw.mapInArrow(
        _example_task(config.holdout_fraction, config.query_dim),
        from_arrow_schema(EXAMPLE_SCHEMA.append(pa.field(REPORT, pa.string()))),
    ).persist(CACHED)
    log = _report_of(examples)
    rows = examples.where(F.col(REPORT).isNull()).drop(REPORT)
    known = rows.join(products.select(PRODUCT_ID), PRODUCT_ID, "left_semi")
    heldout = known.where(F.col(HELDOUT)).drop(HELDOUT)
    heldout_files = writer.write(_shuffled(heldout, shards, config.seed), HELDOUT_SCHEMA, "heldout")
    train = known.where(~F.col(HELDOUT)).drop(HELDOUT)
    per_task_of_product = [F.sum((F.col(TASK) == t).cast("int")) for t in range(len(TASKS))]
    task_counts = train.groupBy(PRODUCT_ID).agg(
        F.array(*per_task_of_product).cast("array<int>").alias(TASK_COUNTS)
    )
    joined = train.join(products, PRODUCT_ID).join(task_counts, PRODUCT_ID)
    joined = joined.select(*TRAIN_SCHEMA.names)
    writer.write(_shuffled(joined, shards, config.seed), TRAIN_SCHEMA, "train")
    per_task = {r[TASK]: r["count"] for r in train.groupBy(TASK).count().collect()}
    heldout_count = sum(f["rows"] for f in heldout_files)
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
