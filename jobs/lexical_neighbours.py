"""Each product's nearest lexical neighbours on Spark, for the catalog objective at scale.

TF-IDF cosine with the formulas of itemsage_core/features/lexical_neighbours.py (the terms come
from its `term_counts`, on the executors). Instead of comparing every pair of products, two
products are compared through the terms they share: a term held by df products makes df x df
pairs, so terms held by more than `max_df` products (the commonest words, with the lowest
weights) make none. Their weight still counts in each product's norm. With `max_df` at or above
the catalog size the result is exact; docs/training.md gives the measured effect of the cap.
Unlike the in-process TF-IDF teacher (teacher_neighbours.py), which always gives k (padding with
products of score 0, ties by row order, float32 scores), a product here gets only neighbours with
a positive score, ties broken by id, scores in float64.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema

from itemsage_core.contracts.catalog_contract import PRODUCT_ID, TEXT_FEATURES
from itemsage_core.features.lexical_neighbours import TERM_COUNTS_SCHEMA, term_counts


def unit_tfidf(products: DataFrame, n: int) -> DataFrame:
    """(product_id, term, df, w): each product's TF-IDF weights, scaled to unit length."""

    def count(batches):
        for batch in batches:
            yield from term_counts(batch, list(TEXT_FEATURES)).to_batches()

    terms = products.select(PRODUCT_ID, *TEXT_FEATURES).mapInArrow(
        count, from_arrow_schema(TERM_COUNTS_SCHEMA)
    )
    # windows, not a join: the terms are analysed once
    counted = terms.withColumn("df", F.count("*").over(Window.partitionBy("term")))
    idf = F.log(F.lit(1.0 + n) / (1.0 + F.col("df"))) + 1.0
    weighted = counted.withColumn("w", (1.0 + F.log("tf")) * idf)
    norm = F.sqrt(F.sum(F.col("w") * F.col("w")).over(Window.partitionBy(PRODUCT_ID)))
    return weighted.withColumn("w", F.col("w") / norm).select(PRODUCT_ID, "term", "df", "w")


def lexical_neighbours_on_spark(products: DataFrame, n: int, k: int, max_df: int) -> DataFrame:
    """(product_id, neighbours, scores): for each of the `n` conformed `products` that shares a
    term with another, up to `k` neighbour ids and their TF-IDF cosines, the best first (ties by
    id); only neighbours with a positive score (a product with none has no row)."""
    shared = unit_tfidf(products, n).where((F.col("df") >= 2) & (F.col("df") <= max_df))
    left = shared.select(F.col(PRODUCT_ID).alias("a"), "term", F.col("w").alias("wa"))
    right = shared.select(F.col(PRODUCT_ID).alias("b"), "term", F.col("w").alias("wb"))
    pairs = (
        left.join(right, "term")
        .where(F.col("a") != F.col("b"))
        .groupBy("a", "b")
        .agg(F.sum(F.col("wa") * F.col("wb")).alias("score"))
    )
    order = Window.partitionBy("a").orderBy(F.desc("score"), F.asc("b"))
    best = pairs.withColumn("rank", F.row_number().over(order)).where(F.col("rank") <= k)
    ranked = F.array_sort(F.collect_list(F.struct("rank", "b", "score"))).alias("ranked")
    return (
        best.groupBy("a")
        .agg(ranked)
        .select(
            F.col("a").alias(PRODUCT_ID),
            F.col("ranked.b").alias("neighbours"),
            F.col("ranked.score").alias("scores"),
        )
    )
