"""The catalog as a Spark DataFrame: read, mapped, conformed and checked row by row.

The contract logic lives in itemsage_core; this module only runs it inside `mapInArrow` on the
executors, so the catalog is never collected to the driver, whatever its size.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema
from pyspark.sql.types import StringType, StructField, StructType

from itemsage_core.catalog_contract import (DEFAULT_IMAGE_DIM, PRODUCT_ID, RULES,
                                            catalog_row_problems, check_catalog_schema,
                                            conform_catalog)
from itemsage_core.arrow_checks import as_array
from itemsage_core.arrow_ipc import from_ipc, to_ipc
from itemsage_core.column_mapping import ColumnMapping
from itemsage_core.column_types import STRING, coerce
from itemsage_core.embed_task import REASON, conform_batch, repeated_ids_of
from itemsage_core.errors import ContractError, ItemSageError
from itemsage_core.parquet_io import footers, row_groups_of
from itemsage_core.validation_report import ValidationReport

_COPIES = "_copies"


def raw_catalog(spark: SparkSession, path: str,
                mapping: ColumnMapping | None = None) -> tuple[DataFrame, pa.Schema]:
    """The raw catalog DataFrame and its conformed schema, after the schema-level checks.

    Schema-level problems (a missing or mistyped column) raise ContractError on the driver,
    before any data is read. A job can then conform batches itself (conform_batch) in the same
    Python pass as its own work.
    """
    try:
        raw = spark.read.parquet(path)
    except AnalysisException as exc:
        raise ItemSageError(f"cannot read catalog Parquet at {path}: "
                            f"{str(exc).splitlines()[0]}") from None
    empty = raw.limit(0).toArrow()
    mapped = mapping.apply(empty) if mapping else empty
    check_catalog_schema(mapped.schema)
    return raw, conform_catalog(mapped).schema


def checked_row_groups(path: str, mapping: ColumnMapping | None = None
                       ) -> list[tuple[str, int, int]]:
    """(file, row group, rows) of every row group of a local catalog, from the footers, each
    file's schema checked on the way: a file that is not Parquet, or whose schema breaks the
    contract, stops the run with one error naming it, before Spark reads anything."""
    groups = []
    for file, meta in footers(path):
        empty = meta.schema.to_arrow_schema().empty_table()
        try:
            check_catalog_schema((mapping.apply(empty) if mapping else empty).schema)
        except ContractError as exc:
            raise ContractError(f"{file}: {exc}") from None
        groups += row_groups_of(file, meta)
    return groups


def read_catalog(spark: SparkSession, path: str,
                 mapping: ColumnMapping | None = None) -> DataFrame:
    """The catalog at `path` (file, directory or glob), mapped and conformed to the contract."""
    raw, schema = raw_catalog(spark, path, mapping)

    def conform(batches):
        for batch in batches:
            yield from conform_batch(batch, mapping).to_batches()

    return raw.mapInArrow(conform, from_arrow_schema(schema))


def _id_rule(mapping: ColumnMapping | None):
    """The mapping rule that makes product_id (None: the column is read as it is)."""
    return next((r for r in mapping.rules if r.target == PRODUCT_ID), None) if mapping else None


def _conformed_ids(table: pa.Table, rule) -> pa.Array:
    value = rule.apply(table) if rule else as_array(table.column(PRODUCT_ID))
    return coerce(value, STRING)


def catalog_ids(spark: SparkSession, path: str,
                mapping: ColumnMapping | None = None) -> DataFrame:
    """The product_id of every catalog row, exactly as conform_batch makes it (mapped, text
    decoded), reading only the source columns it comes from."""
    rule = _id_rule(mapping)

    def ids(batches):
        for batch in batches:
            yield pa.RecordBatch.from_arrays([_conformed_ids(pa.table(batch), rule)],
                                             [PRODUCT_ID])

    raw = spark.read.parquet(path)
    return raw.select(*(rule.sources if rule else (PRODUCT_ID,))).mapInArrow(
        ids, f"{PRODUCT_ID} string")


def repeated_ids_in_files(spark: SparkSession, groups: list[tuple[str, int, int]],
                          mapping: ColumnMapping | None = None) -> pa.Table:
    """repeated_ids for a local catalog given as row groups, without Spark SQL: tasks read the
    id source columns with pyarrow, send each id to a bucket by hash as Arrow IPC bytes, and
    each bucket keeps the ids it saw more than once. (The SQL path's first query costs ~5 s of
    JVM warm-up; this one starts the Python workers the embedding stage reuses.)"""
    rule = _id_rule(mapping)
    columns = list(rule.sources if rule else (PRODUCT_ID,))
    buckets = max(1, spark.sparkContext.defaultParallelism)

    def split(items):
        for file, group, _ in items:
            ids = _conformed_ids(pq.ParquetFile(file).read_row_group(group, columns=columns),
                                 rule).drop_null()
            bucket = pd.util.hash_array(ids.to_numpy(zero_copy_only=False)) % buckets
            for b in np.unique(bucket):
                yield int(b), to_ipc(pa.table({PRODUCT_ID: ids.filter(bucket == b)}))

    def count(pairs):
        tables = [from_ipc(data) for _, data in pairs]
        if tables:
            yield to_ipc(repeated_ids_of(pa.concat_tables(tables).column(PRODUCT_ID)))

    found = (spark.sparkContext.parallelize(groups, max(1, len(groups))).mapPartitions(split)
             .partitionBy(buckets, lambda b: b).mapPartitions(count).collect())
    empty = pa.table({PRODUCT_ID: pa.array([], pa.string()), "count": pa.array([], pa.int64())})
    return pa.concat_tables([empty, *(from_ipc(d).cast(empty.schema) for d in found)])


def with_copies(catalog: DataFrame, ids: DataFrame | None = None) -> DataFrame:
    """Add `_copies`: how many rows share the row's product_id, null when it is unique.

    Ids are counted over the whole catalog (`ids`, from catalog_ids, reads only the id column;
    without it the catalog itself is scanned); only the repeated ones (normally few) are joined
    back, as a broadcast. `row_reasons` turns a batch of the result into reasons.
    """
    counted = catalog.select(PRODUCT_ID) if ids is None else ids
    repeated = (counted.groupBy(PRODUCT_ID).count().where(F.col("count") > 1)
                .select(PRODUCT_ID, F.col("count").alias(_COPIES)))
    return catalog.join(F.broadcast(repeated), PRODUCT_ID, "left").select(
        *catalog.columns, _COPIES)


def repeated_ids(ids: DataFrame) -> pa.Table:
    """`product_id` and `count` of the ids on more than one row (normally few: collected).
    Null ids are not duplicates (they are missing ids)."""
    repeated = ids.where(F.col(PRODUCT_ID).isNotNull()).groupBy(PRODUCT_ID).count().where(
        F.col("count") > 1)
    return repeated.toArrow()


def row_reasons(batch: pa.RecordBatch | pa.Table,
                image_dim: int = DEFAULT_IMAGE_DIM) -> tuple[pa.Table, pa.Array]:
    """A `with_copies` batch without `_copies`, and each row's reasons (null = valid)."""
    table = pa.table(batch)
    copies = table.column(_COPIES).combine_chunks()
    table = table.drop_columns([_COPIES])
    return table, catalog_row_problems(table, image_dim, copies)


def with_reasons(catalog: DataFrame, image_dim: int = DEFAULT_IMAGE_DIM,
                 ids: DataFrame | None = None) -> DataFrame:
    """Add a `reason` column (null for a valid row), duplicate product ids included."""
    schema = StructType([*catalog.schema.fields, StructField(REASON, StringType())])

    def check(batches):
        for batch in batches:
            table, reasons = row_reasons(batch, image_dim)
            yield from table.append_column(REASON, reasons).to_batches()

    return with_copies(catalog, ids).mapInArrow(check, schema)


def validation_report(checked: DataFrame) -> ValidationReport:
    """Counts of a DataFrame from `with_reasons`: rows, valid, rejected, rows per rule."""
    totals = checked.agg(F.count(F.lit(1)).alias("rows"),
                         F.count(REASON).alias("rejected")).first()
    rules = (checked.where(F.col(REASON).isNotNull())
             .select(F.explode(F.split(REASON, "; ")).alias("r"))
             .groupBy(F.substring_index("r", ":", 1).alias("rule")).count().collect())
    return ValidationReport(contract="catalog", rows=totals["rows"],
                            valid=totals["rows"] - totals["rejected"],
                            rejected=totals["rejected"],
                            rule_counts={r["rule"]: r["count"] for r in rules}, rules=RULES)
