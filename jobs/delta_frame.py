"""A Delta table version as a Spark DataFrame, without Delta's JVM connector: deltalake lists the
version's data files (our tables use neither deletion vectors nor column mapping, so the files
are the version's rows). Spark reads local and HDFS files as Parquet; files on an object store
(S3, GCS, Azure) are read by the executors through pyarrow's filesystems, so no Hadoop connector
(hadoop-aws, ...) is needed and credentials come from the environment, as when the embedding job
writes them. A pinned version is checked first (table_versions.require_readable): one whose
files a vacuum removed fails at once with the oldest readable version, before Spark scans."""

from __future__ import annotations

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.pandas.types import from_arrow_schema

from itemsage_core.embedding.table_versions import require_readable
from itemsage_core.errors import ItemSageError
from itemsage_core.storage.uris import is_object_store
from jobs.parquet_frame import arrow_scan


def read_delta(
    spark: SparkSession, table_uri: str, version: int | None = None
) -> tuple[DataFrame, int] | tuple[None, None]:
    """The table's rows at `version` (default: latest) and that version; (None, None) when there
    is no table and no version was asked for."""
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError

    if not DeltaTable.is_deltatable(table_uri):
        if version is None:
            return None, None
        raise ItemSageError(f"{table_uri} is not a Delta table")
    try:
        table = DeltaTable(table_uri, version=version)
    except DeltaError as exc:  # e.g. a version that does not exist (or was vacuumed)
        raise ItemSageError(f"cannot read {table_uri} at version {version}: {exc}") from None
    if version is not None:  # a pinned version's files may have been vacuumed since
        require_readable(table_uri, version, table=table)
    files = table.file_uris()
    schema = pa.schema(table.schema().to_arrow())
    if not files:
        return spark.createDataFrame([], from_arrow_schema(schema)), table.version()
    if not is_object_store(table_uri):
        return spark.read.parquet(*files), table.version()
    return arrow_scan(spark, files, schema), table.version()
