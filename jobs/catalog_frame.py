"""The catalog as a Spark DataFrame: read, mapped, conformed and checked row by row.

The contract logic lives in itemsage_core; this module only runs it inside `mapInArrow` on the
executors, so the catalog is never collected to the driver, whatever its size: only the
repeated ids (normally few; the ids are split by hash and each part counted with the contract's
`repeated_ids_of`) and per-task counts are.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.pandas.types import from_arrow_schema

from itemsage_core.contracts.catalog_check import (
    catalog_report,
    check_batch,
    check_batches,
    conformed_ids,
    id_sources,
    row_group_ids,
)
from itemsage_core.contracts.catalog_contract import (
    DEFAULT_IMAGE_DIM,
    PRODUCT_ID,
    check_catalog_schema,
    repeated_ids_of,
)
from itemsage_core.contracts.column_mapping import ColumnMapping, add_failures, conformed, mapped
from itemsage_core.contracts.validation_report import ValidationReport
from itemsage_core.embedding.embed_task import REASON
from itemsage_core.storage.arrow_ipc import from_ipc, to_ipc
from jobs.parquet_frame import parquet_frame

REPEATED_SCHEMA = pa.schema([(PRODUCT_ID, pa.string()), ("count", pa.int64())])


def raw_catalog(
    spark: SparkSession, path: str, mapping: ColumnMapping | None = None
) -> tuple[DataFrame, pa.Schema]:
    """The raw catalog DataFrame and its conformed schema, after the schema-level checks.

    Schema-level problems (a missing or mistyped column) raise ContractError on the driver,
    before any data is read. A job can then conform batches itself (column_mapping.conformed)
    in the same Python pass as its own work.
    """
    raw = parquet_frame(spark, path, "catalog Parquet")
    empty = raw.limit(0).toArrow()
    schema = mapped(empty, mapping).schema
    check_catalog_schema(schema)
    return raw, conformed(empty, mapping).schema


def read_catalog(spark: SparkSession, path: str, mapping: ColumnMapping | None = None) -> DataFrame:
    """The catalog at `path` (file, directory or glob), mapped and conformed to the contract."""
    raw, schema = raw_catalog(spark, path, mapping)

    def conform(batches):
        for batch in batches:
            yield from conformed(batch, mapping).to_batches()

    return raw.mapInArrow(conform, from_arrow_schema(schema))


def catalog_ids(spark: SparkSession, path: str, mapping: ColumnMapping | None = None) -> DataFrame:
    """The product_id of every catalog row, exactly as column_mapping.conformed makes it
    (mapped, text decoded), reading only the source columns it comes from."""

    def ids(batches):
        for batch in batches:
            yield pa.RecordBatch.from_arrays(
                [conformed_ids(pa.table(batch), mapping)], [PRODUCT_ID]
            )

    return (
        parquet_frame(spark, path)
        .select(*id_sources(mapping))
        .mapInArrow(ids, f"{PRODUCT_ID} string")
    )


def _buckets(spark: SparkSession) -> int:
    """How many parts the ids are split into, by hash, to be counted: as many as a shuffle
    has (spark.sql.shuffle.partitions), at least one per task slot, so that no part holds more
    than its share of a large catalog's ids."""
    shuffle = int(spark.conf.get("spark.sql.shuffle.partitions", "200"))
    return max(1, spark.sparkContext.defaultParallelism, shuffle)


def repeated_ids_in_files(
    spark: SparkSession, groups: list[tuple[str, int, int]], mapping: ColumnMapping | None = None
) -> pa.Table:
    """repeated_ids for a local catalog given as row groups, without Spark SQL: tasks read the
    id source columns with pyarrow, send each id to a bucket by hash as Arrow IPC bytes, and
    each bucket counts its ids with repeated_ids_of. (A DataFrame read's first query costs ~5 s
    of JVM warm-up; this one starts the Python workers the embedding stage reuses.)"""
    buckets = _buckets(spark)

    def split(items):
        for file, group, _ in items:
            ids = row_group_ids(file, group, mapping).drop_null()
            bucket = pd.util.hash_array(ids.to_numpy(zero_copy_only=False)) % buckets
            for b in np.unique(bucket):
                yield int(b), to_ipc(pa.table({PRODUCT_ID: ids.filter(bucket == b)}))

    def count(pairs):
        tables = [from_ipc(data) for _, data in pairs]
        if tables:
            yield to_ipc(repeated_ids_of(pa.concat_tables(tables).column(PRODUCT_ID)))

    found = (
        spark.sparkContext.parallelize(groups, max(1, len(groups)))
        .mapPartitions(split)
        .partitionBy(buckets, lambda b: b)
        .mapPartitions(count)
        .collect()
    )
    empty = REPEATED_SCHEMA.empty_table()
    return pa.concat_tables([empty, *(from_ipc(d).cast(REPEATED_SCHEMA) for d in found)])


def without_repeated_ids(rows: DataFrame) -> DataFrame:
    """`rows` (with a `product_id` column) less every row whose id is on more than one row: the
    embedding job never embeds those ids."""
    repeated = repeated_ids_frame(rows.select(PRODUCT_ID)).select(PRODUCT_ID)
    return rows.join(repeated, PRODUCT_ID, "left_anti")


def repeated_ids_frame(ids: DataFrame) -> DataFrame:
    """`product_id` and `count` of the ids (a `product_id` column) on more than one row, as a
    DataFrame: each id goes to a partition by hash, whose ids repeated_ids_of counts on the
    executors. Null ids are not duplicates (they are missing ids)."""

    def count(batches):
        column = [b.column(0).cast(pa.string()) for b in batches]
        yield from repeated_ids_of(pa.chunked_array(column, pa.string())).to_batches()

    by_id = ids.select(PRODUCT_ID).repartition(_buckets(ids.sparkSession), PRODUCT_ID)
    return by_id.mapInArrow(count, from_arrow_schema(REPEATED_SCHEMA))


def repeated_ids(ids: DataFrame) -> pa.Table:
    """repeated_ids_frame, collected (normally few rows)."""
    return repeated_ids_frame(ids).toArrow()


def with_reasons(
    spark: SparkSession,
    path: str,
    mapping: ColumnMapping | None,
    repeated: pa.Table,
    image_dim: int = DEFAULT_IMAGE_DIM,
) -> DataFrame:
    """The catalog at `path`, mapped and conformed, with a `reason` column (null for a valid
    row): check_batch on the executors, `repeated` (repeated_ids of the whole catalog) shipped
    with the tasks."""
    raw, schema = raw_catalog(spark, path, mapping)

    def check(batches):
        for batch in batches:
            table, reasons = check_batch(batch, mapping, image_dim, repeated)
            yield from table.append_column(REASON, reasons).to_batches()

    return raw.mapInArrow(check, from_arrow_schema(schema.append(pa.field(REASON, pa.string()))))


def _per_task(
    frame: DataFrame, count: Callable[[Iterator[pa.RecordBatch]], Iterator[dict]]
) -> list[dict]:
    """The JSON-able dicts `count` makes of each task's batches of `frame`, collected."""

    def run(batches):
        for part in count(batches):
            yield pa.RecordBatch.from_pylist([{"part": json.dumps(part)}])

    return [json.loads(r["part"]) for r in frame.mapInArrow(run, "part string").collect()]


def validate_on_spark(
    spark: SparkSession,
    path: str,
    mapping: ColumnMapping | None = None,
    image_dim: int = DEFAULT_IMAGE_DIM,
) -> ValidationReport:
    """The catalog's ValidationReport computed on the executors: the ids first (catalog_ids),
    then one pass in which every task checks its batches (check_batches) and the driver sums
    their partial reports, as `itemsage validate` does in-process."""
    raw = raw_catalog(spark, path, mapping)[0]
    repeated = repeated_ids(catalog_ids(spark, path, mapping))
    return catalog_report(
        _per_task(raw, lambda batches: check_batches(batches, mapping, image_dim, repeated))
    )


def conversion_failures(spark: SparkSession, path: str, mapping: ColumnMapping) -> dict:
    """The mapping's failed conversions over the whole catalog (column_mapping.add_failures),
    reading only the converted extras' source columns."""
    converting = mapping.converting()
    if not converting.rules:
        return {}

    def count(batches):
        yield functools.reduce(
            add_failures, (converting.map_batch(b).failures for b in batches), {}
        )

    raw = parquet_frame(spark, path).select(*sorted(converting.sources))
    return functools.reduce(add_failures, _per_task(raw, count), {})
