"""A Delta table version as a Spark DataFrame, without Delta's JVM connector: deltalake lists the
version's data files and Spark reads them as Parquet (our tables use neither deletion vectors nor
column mapping, so the files are the version's rows)."""

from __future__ import annotations

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.pandas.types import from_arrow_schema

from itemsage_core.errors import ItemSageError


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
    files = table.file_uris()
    if not files:
        schema = from_arrow_schema(pa.schema(table.schema().to_arrow()))
        return spark.createDataFrame([], schema), table.version()
    # Hadoop's S3 connector is s3a://; the other object stores keep their scheme.
    files = ["s3a://" + f[len("s3://") :] if f.startswith("s3://") else f for f in files]
    return spark.read.parquet(*files), table.version()
