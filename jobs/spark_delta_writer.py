"""`--writer spark-delta` (jobs/embed_committers.py): commit through Delta's Spark connector
where io.delta is on the classpath (clusters with delta-spark), instead of the deltalake library.

The job's tasks still write their Parquet files in one pass, into a staging folder; this writer
reads them back with Spark and writes them through the connector in one transaction per table,
with the same app transaction (`txnAppId` = itemsage/<run_id>, `txnVersion` 0: Delta skips a
write it already committed) and the run summary as `userMetadata`. pyspark is imported inside
the functions: the CLI imports this module (through the committers' table) to list the writers.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pyarrow as pa

from itemsage_core.embedding.embeddings_table import app_id
from itemsage_core.errors import ItemSageError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

STAGING = "_itemsage_staging"  # Delta ignores paths that start with an underscore


def require_connector(spark: SparkSession) -> None:
    """Fail clearly when Delta's Spark connector is not on the classpath."""
    try:
        spark._jvm.java.lang.Class.forName("io.delta.tables.DeltaTable")
    except Exception:  # py4j wraps the JVM's ClassNotFoundException
        raise ItemSageError(
            "--writer spark-delta needs Delta's Spark connector (io.delta) on the classpath, "
            "with spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension and "
            "spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog; "
            "or use the default --writer deltalake"
        ) from None


def staging_uri(table_uri: str, run_id: str) -> str:
    """Where the run's tasks write a table's files before they are committed (then deleted)."""
    return f"{table_uri.rstrip('/')}/{STAGING}/{run_id}"


def commit_with_spark(
    spark: SparkSession,
    table_uri: str,
    staged: str,
    files: list[dict],
    schema: pa.Schema,
    mode: str,
    run_id: str,
    metadata: dict,
) -> None:
    """Write the staged files through the connector in one transaction."""
    from pyspark.sql.pandas.types import from_arrow_schema

    paths = [f"{staged}/{f['path']}" for f in files]
    frame = (
        spark.read.schema(from_arrow_schema(schema)).parquet(*paths)
        if paths
        else spark.createDataFrame([], from_arrow_schema(schema))
    )
    (
        frame.write.format("delta")
        .mode(mode)
        .option("txnAppId", app_id(run_id))
        .option("txnVersion", 0)
        .option("userMetadata", json.dumps(metadata))
        .save(table_uri)
    )
