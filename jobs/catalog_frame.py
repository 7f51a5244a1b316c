"""The catalog as a Spark DataFrame: read, mapped, conformed and checked row by row.

The contract logic lives in itemsage_core; this module only runs it inside `mapInArrow` on the
executors, so the catalog is never collected to the driver, whatever its size.
"""

from __future__ import annotations

import pyarrow as pa
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema
from pyspark.sql.types import StringType, StructField, StructType

from itemsage_core.catalog_contract import (DEFAULT_IMAGE_DIM, PRODUCT_ID, RULES,
                                            catalog_row_problems, check_catalog_schema,
                                            conform_catalog)
from itemsage_core.column_mapping import ColumnMapping
from itemsage_core.errors import ItemSageError
from itemsage_core.validation_report import ValidationReport

REASON = "reason"
_COPIES = "_copies"


def read_catalog(spark: SparkSession, path: str,
                 mapping: ColumnMapping | None = None) -> DataFrame:
    """The catalog at `path` (file, directory or glob), mapped and conformed to the contract.

    Schema-level problems (a missing or mistyped column) raise ContractError on the driver,
    before any data is read.
    """
    try:
        raw = spark.read.parquet(path)
    except AnalysisException as exc:
        raise ItemSageError(f"cannot read catalog Parquet at {path}: "
                            f"{str(exc).splitlines()[0]}") from None
    empty = raw.limit(0).toArrow()
    mapped = mapping.apply(empty) if mapping else empty
    check_catalog_schema(mapped.schema)
    schema = conform_catalog(mapped).schema

    def conform(batches):
        for batch in batches:
            table = mapping.apply(batch) if mapping else pa.table(batch)
            yield from conform_catalog(table).to_batches()

    return raw.mapInArrow(conform, from_arrow_schema(schema))


def with_reasons(catalog: DataFrame, image_dim: int = DEFAULT_IMAGE_DIM) -> DataFrame:
    """Add a `reason` column (null for a valid row), duplicate product ids included.

    Ids are counted over the whole catalog; only the repeated ones (normally few) are joined
    back, as a broadcast.
    """
    repeated = (catalog.groupBy(PRODUCT_ID).count().where(F.col("count") > 1)
                .select(PRODUCT_ID, F.col("count").alias(_COPIES)))
    joined = catalog.join(F.broadcast(repeated), PRODUCT_ID, "left").select(
        *catalog.columns, _COPIES)
    schema = StructType([*catalog.schema.fields, StructField(REASON, StringType())])

    def check(batches):
        for batch in batches:
            table = pa.table(batch)
            copies = table.column(_COPIES).combine_chunks()
            table = table.drop_columns([_COPIES])
            reasons = catalog_row_problems(table, image_dim, copies)
            yield from table.append_column(REASON, reasons).to_batches()

    return joined.mapInArrow(check, schema)


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
