"""The embedding job's readers: how its tasks get the catalog's rows, one class per input path.

- `RowGroupReader`: a catalog on a local disk or an object store, read as Parquet row groups
  with pyarrow in RDD tasks (the driver lists the files and reads their footers). The rows never
  pass through the JVM, whose Parquet-to-Arrow path for nested image vectors costs more than the
  encoder's tokeniser, no SQL query is planned (the clip-retrieval reader pattern), and no
  Hadoop connector is needed.
- `SparkScanReader`: a catalog Spark reads (HDFS, or an object store through Hadoop's connector
  when `spark.itemsage.objectStoreReader=spark`): raw rows to the tasks through
  mapInArrow, mapped, conformed and checked in the same Python pass as the encoder, so the rows
  cross from the JVM to Python once.
- `IncrementalReader`: --incremental against an existing table: checked rows are classified by
  content hash and model against the table; new, changed and rejected rows go to the tasks,
  unchanged rows are carried over as they are.

`catalog_reader` chooses one. Each gives the catalog's repeated ids, runs the job's task over its
rows (`embed`), and counts the catalog's rows and failed conversions.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from itemsage_core.contracts.catalog_check import checked_row_groups
from itemsage_core.contracts.catalog_contract import PRODUCT_ID
from itemsage_core.embedding.content_hash import content_hashes
from itemsage_core.embedding.embed_run import EmbedConfig, incremental_counts, task_conversions
from itemsage_core.embedding.embed_task import REASON, carry_task, read_slices, row_group_slices
from itemsage_core.storage.uris import is_local_path
from jobs.catalog_frame import (
    catalog_ids,
    conversion_failures,
    raw_catalog,
    repeated_ids,
    repeated_ids_in_files,
    with_reasons,
)
from jobs.delta_frame import read_delta
from jobs.parquet_frame import arrow_reads, parquet_frame

CONTENT_HASH, STATUS = "content_hash", "_status"
# The Spark schema of a task's file descriptions (embed_task.embed_task's).
FILES_SCHEMA = (
    "kind string, path string, size long, rows long, modification_time long, "
    "stats string, coverage string, conversions string"
)
# The job's task: catalog record batches in, batches of its files' descriptions out.
Task = Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]


def as_batch(described: list[dict]) -> Iterator[pa.RecordBatch]:
    """A task's file descriptions as one FILES_SCHEMA batch (none when it wrote no file)."""
    if described:
        yield pa.RecordBatch.from_pylist(described)


def _described(files: DataFrame) -> list[dict]:
    """The file descriptions a DataFrame of them holds, collected."""
    return [r.asDict() for r in files.collect()]


class CatalogReader(abc.ABC):
    """One input path's reader. `read_version` is the table version the run replaces. A run
    calls repeated_ids, then plan (which may fix the rows the tasks get), then embed and
    carry_over, then rows_in and conversions."""

    def __init__(self, spark: SparkSession, config: EmbedConfig, read_version: int):
        self.spark, self.config, self.read_version = spark, config, read_version

    @abc.abstractmethod
    def repeated_ids(self) -> pa.Table:
        """The whole catalog's repeated ids (repeated_ids_of's table), for the duplicate rule."""

    def plan(self, repeated: pa.Table, progress: Callable[[str], None]) -> dict:
        """Decide which rows the tasks get; returns the run summary's entries about it."""
        return {}

    @abc.abstractmethod
    def embed(self, task: Task) -> list[dict]:
        """Run `task` over the rows; returns the files it wrote."""

    def carry_over(self, target: str, run_id: str) -> list[dict]:
        """Write the rows carried over unchanged into `target`; returns their files."""
        return []

    @abc.abstractmethod
    def rows_in(self) -> int:
        """The catalog's rows."""

    def conversions(self, files: list[dict]) -> dict:
        """The mapping's failed conversions over the whole catalog; here, counted by the tasks
        that mapped the raw rows and wrote `files`."""
        return task_conversions(files)


class RowGroupReader(CatalogReader):
    """A local or object-store catalog as Parquet row groups read with pyarrow in RDD tasks.
    Its files' schemas are checked from their footers before Spark reads anything."""

    def __init__(self, spark: SparkSession, config: EmbedConfig, read_version: int):
        super().__init__(spark, config, read_version)
        self.groups = checked_row_groups(config.catalog, config.mapping)

    def repeated_ids(self) -> pa.Table:
        return repeated_ids_in_files(self.spark, self.groups, self.config.mapping)

    def embed(self, task: Task) -> list[dict]:
        context = self.spark.sparkContext
        items = row_group_slices(self.groups, context.defaultParallelism)

        def run(items):  # (file, row_group, start, stop) work items
            for described in task(read_slices(items)):
                yield from described.to_pylist()

        return context.parallelize(items, max(1, len(items))).mapPartitions(run).collect()

    def rows_in(self) -> int:
        return sum(n for *_, n in self.groups)


class SparkScanReader(CatalogReader):
    """A catalog read by Spark, raw rows to the tasks. The schema is checked before any row is
    read."""

    def __init__(self, spark: SparkSession, config: EmbedConfig, read_version: int):
        super().__init__(spark, config, read_version)
        self.raw = raw_catalog(spark, config.catalog, config.mapping)[0]

    def repeated_ids(self) -> pa.Table:
        return repeated_ids(catalog_ids(self.spark, self.config.catalog, self.config.mapping))

    def embed(self, task: Task) -> list[dict]:
        return _described(self.raw.mapInArrow(task, FILES_SCHEMA))

    def rows_in(self) -> int:
        return parquet_frame(self.spark, self.config.catalog).count()


class IncrementalReader(CatalogReader):
    """Checked catalog rows (a `reason` column) classified against the table's rows `current`
    (at `read_version`); `full`, the catalog's own reader, gives the repeated ids and the row
    count."""

    def __init__(
        self,
        full: CatalogReader,
        current: DataFrame,
        read_version: int,
        model_version: str,
        image_dim: int,
    ):
        super().__init__(full.spark, full.config, read_version)
        self.full, self.current = full, current
        self.model_version, self.image_dim = model_version, image_dim

    def repeated_ids(self) -> pa.Table:
        return self.full.repeated_ids()

    def plan(self, repeated: pa.Table, progress: Callable[[str], None]) -> dict:
        """Classify every catalog row (_classify); count the rows per status."""
        config = self.config
        self.checked = with_reasons(
            self.spark, config.catalog, config.mapping, repeated, self.image_dim
        )
        self.classified = _classify(self.checked, self.current, self.model_version)
        statuses = {
            r[STATUS]: r["count"] for r in self.classified.groupBy(STATUS).count().collect()
        }
        counts = incremental_counts(self.read_version, statuses, self.current.count())
        progress(f"incremental from version {self.read_version}: {counts}")
        return {"incremental": counts}

    def embed(self, task: Task) -> list[dict]:
        """Run `task` over the new, changed and rejected rows plan classified."""
        changed = self.classified.where(F.col(STATUS) != "unchanged")
        return _described(changed.select(*self.checked.columns).mapInArrow(task, FILES_SCHEMA))

    def carry_over(self, target: str, run_id: str) -> list[dict]:
        unchanged = self.classified.where(F.col(STATUS) == "unchanged").select(PRODUCT_ID)
        carried = self.current.join(unchanged, PRODUCT_ID, "left_semi")

        def run(batches):
            yield from as_batch(carry_task(batches, target, run_id))

        return _described(carried.mapInArrow(run, FILES_SCHEMA))

    def rows_in(self) -> int:
        return self.full.rows_in()

    def conversions(self, files: list[dict]) -> dict:
        """The tasks got checked rows: the conversions are counted in a pass of their own."""
        config = self.config
        return (
            conversion_failures(self.spark, config.catalog, config.mapping)
            if config.mapping
            else {}
        )


def whole_catalog_reader(
    spark: SparkSession, config: EmbedConfig, read_version: int
) -> CatalogReader:
    """Row groups read with pyarrow by the tasks (local catalogs and, without Hadoop's
    connector, object stores), else Spark's scan."""
    local = is_local_path(config.catalog) or arrow_reads(spark, config.catalog)
    return (RowGroupReader if local else SparkScanReader)(spark, config, read_version)


def catalog_reader(
    spark: SparkSession,
    config: EmbedConfig,
    read_version: int,
    model_version: str,
    image_dim: int,
) -> CatalogReader:
    """The run's reader: a local catalog's row groups or a Spark scan; with --incremental and a
    table to compare with, an incremental reader over that one."""
    full = whole_catalog_reader(spark, config, read_version)
    if config.incremental:
        current, version = read_delta(spark, config.table_uri)
        if current is not None:
            return IncrementalReader(full, current, version, model_version, image_dim)
    return full


def _with_hash(batches):
    for batch in batches:
        table = pa.table(batch)
        yield from table.append_column(CONTENT_HASH, content_hashes(table)).to_batches()


def _classify(checked: DataFrame, current: DataFrame, model_version: str) -> DataFrame:
    """Add `_status`: quarantine, new, changed (content or model differs) or unchanged."""
    schema = StructType([*checked.schema.fields, StructField(CONTENT_HASH, StringType())])
    hashed = checked.mapInArrow(_with_hash, schema)
    known = current.select(
        PRODUCT_ID,
        F.col(CONTENT_HASH).alias("_current_hash"),
        F.col("model_version").alias("_current_model"),
    )
    joined = hashed.join(known, PRODUCT_ID, "left")
    status = (
        F.when(F.col(REASON).isNotNull(), "quarantine")
        .when(F.col("_current_hash").isNull(), "new")
        .when(
            (F.col("_current_hash") != F.col(CONTENT_HASH))
            | (F.col("_current_model") != F.lit(model_version)),
            "changed",
        )
        .otherwise("unchanged")
    )
    return joined.withColumn(STATUS, status)
