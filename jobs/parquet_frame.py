"""Parquet files as a Spark DataFrame, on any filesystem. Local (and HDFS) paths go through
Spark's reader. Files on an object store (S3, GCS, Azure) are listed on the driver and read by the
tasks through pyarrow's filesystems, so no Hadoop connector (hadoop-aws, ...) is needed and
credentials come from the environment or the instance role, as when the jobs write there. A
cluster that has the connector can keep Spark's reader for object stores with
`--conf spark.itemsage.objectStoreReader=spark` (docs/operations.md)."""

from __future__ import annotations

import os

import pyarrow as pa
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.pandas.types import from_arrow_schema

from itemsage_core.errors import ItemSageError
from itemsage_core.storage.parquet_io import GLOB_CHARS, open_parquet, parquet_files, read_schema
from itemsage_core.storage.uris import is_object_store

READER_CONF = "spark.itemsage.objectStoreReader"  # "arrow" (default) or "spark"


def arrow_reads(spark: SparkSession, path: str) -> bool:
    """Whether the tasks read `path` with pyarrow (an object store, unless the session says to
    use Spark's reader) rather than Spark's Parquet reader."""
    if not is_object_store(path):
        return False
    reader = spark.conf.get(READER_CONF, "arrow").lower()
    if reader not in ("arrow", "spark"):
        raise ItemSageError(f"--conf {READER_CONF}={reader}: use arrow or spark")
    return reader == "arrow"


def arrow_scan(spark: SparkSession, files: list[str], schema: pa.Schema) -> DataFrame:
    """The rows of Parquet files (paths or URIs), each file read by one task through pyarrow,
    as `schema` (its columns, in its order and types)."""
    tasks = min(len(files), spark.sparkContext.defaultParallelism)
    paths = spark.createDataFrame([(f,) for f in files], "path string").repartition(tasks)

    def read(batches):
        for batch in batches:
            for file in batch.column("path").to_pylist():
                for part in open_parquet(file).iter_batches(batch_size=8192):
                    yield from (
                        pa.Table.from_batches([part]).select(schema.names).cast(schema).to_batches()
                    )

    return paths.mapInArrow(read, from_arrow_schema(schema))


def parquet_frame(spark: SparkSession, path: str, what: str = "Parquet") -> DataFrame:
    """The Parquet at `path`, a file, a glob, or a directory's *.parquet files alone (a
    featurized catalog keeps its mapping.toml beside them, docs/featurize.md), as a DataFrame;
    `what` names it in the error when it cannot be read."""
    if arrow_reads(spark, path):
        files = parquet_files(path)
        return arrow_scan(spark, files, read_schema(files[0]))
    reader = spark.read
    if not (GLOB_CHARS & set(path) or path.endswith(".parquet") or os.path.isfile(path)):
        reader = reader.option("pathGlobFilter", "*.parquet")
    try:
        return reader.parquet(path)
    except AnalysisException as exc:
        raise ItemSageError(f"cannot read {what} at {path}: {str(exc).splitlines()[0]}") from None
