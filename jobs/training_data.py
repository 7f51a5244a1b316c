"""Training data prepared on Spark (docs/model.md): the catalog's valid products and the
vocabulary counted over them on the executors, so that training data grows with the cluster,
not with one machine. Only the counts' top-K per feature and token kind reach the driver."""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema

from itemsage_core.contracts.catalog_contract import DEFAULT_IMAGE_DIM
from itemsage_core.contracts.column_mapping import ColumnMapping
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
from jobs.catalog_frame import catalog_ids, repeated_ids, with_reasons


def valid_products(
    spark: SparkSession,
    catalog: str,
    mapping: ColumnMapping | None = None,
    image_dim: int = DEFAULT_IMAGE_DIM,
) -> DataFrame:
    """The catalog's valid rows, mapped and conformed (the rows validate_catalog keeps)."""
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
