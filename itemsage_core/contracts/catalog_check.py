"""Checking raw catalog rows batch by batch, with bounded memory and without Spark or torch.

The same code runs in an embedding task, in a Spark validation task and in `itemsage validate`
on a local catalog: `batch_problems` maps, conforms and checks one batch and `check_batch` also
renders its rows' reasons (the duplicate-id rule reads the whole catalog's repeated ids, counted
first: `repeated_ids_of`, defined in catalog_contract); `check_batches` counts each batch's
problems into a JSON-able partial report and `catalog_report` sums partials, from one process or
from many tasks, into the catalog's ValidationReport.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from itemsage_core.contracts.arrow_checks import as_array
from itemsage_core.contracts.catalog_contract import (
    DEFAULT_IMAGE_DIM,
    PRODUCT_ID,
    RULES,
    catalog_row_problems,
    check_catalog_schema,
    conform_catalog,
    copies_in,
    repeated_ids_of,
)
from itemsage_core.contracts.column_mapping import ColumnMapping, add_failures, mapped
from itemsage_core.contracts.column_types import STRING, coerce
from itemsage_core.contracts.validation_report import RowProblems, ValidationReport, summed_report
from itemsage_core.errors import ContractError
from itemsage_core.storage.parquet_io import footers, read_row_group, row_groups_of

BATCH_ROWS = 10_000  # rows per record batch read from a row group


def checked_row_groups(
    path: str | os.PathLike, mapping: ColumnMapping | None = None
) -> list[tuple[str, int, int]]:
    """(file, row group, rows) of every row group of a local catalog, from the footers, each
    file's schema checked on the way: a file that is not Parquet, or whose schema breaks the
    contract, stops the run with one error naming it, before any row is read."""
    groups = []
    for file, meta in footers(path):
        empty = meta.schema.to_arrow_schema().empty_table()
        try:
            check_catalog_schema(mapped(empty, mapping).schema)
        except ContractError as exc:
            raise ContractError(f"{file}: {exc}") from None
        groups += row_groups_of(file, meta)
    return groups


def _id_rule(mapping: ColumnMapping | None):
    """The mapping rule that makes product_id (None: the column is read as it is)."""
    return next((r for r in mapping.rules if r.target == PRODUCT_ID), None) if mapping else None


def id_sources(mapping: ColumnMapping | None) -> list[str]:
    """The raw columns product_id is made from."""
    rule = _id_rule(mapping)
    return list(rule.sources) if rule else [PRODUCT_ID]


def conformed_ids(table: pa.Table, mapping: ColumnMapping | None) -> pa.Array:
    """The product_id of every raw row, exactly as check_batch makes it (mapped, text decoded);
    `table` needs only the id_sources columns."""
    rule = _id_rule(mapping)
    value = rule.apply(table)[0] if rule else as_array(table.column(PRODUCT_ID))
    return coerce(value, STRING)


def row_group_ids(file: str, group: int, mapping: ColumnMapping | None) -> pa.Array:
    """conformed_ids of one row group, reading only its id columns."""
    return conformed_ids(
        pq.ParquetFile(file).read_row_group(group, columns=id_sources(mapping)), mapping
    )


def batch_problems(
    batch: pa.RecordBatch | pa.Table,
    mapping: ColumnMapping | None,
    image_dim: int,
    repeated: pa.Table,
    failures: dict | None = None,
) -> tuple[pa.Table, RowProblems]:
    """One raw catalog batch mapped, conformed and checked: its rows and their problems. The
    mapping's failed conversions are added into `failures`."""
    mapped = mapping.map_batch(batch) if mapping else None
    table = conform_catalog(mapped.table if mapped else pa.table(batch))
    if mapped and failures is not None:
        add_failures(failures, mapped.failures)
    problems = catalog_row_problems(
        table, image_dim, copies_in(table, repeated), mapped.rejects if mapped else None
    )
    return table, problems


def check_batch(
    batch: pa.RecordBatch | pa.Table,
    mapping: ColumnMapping | None,
    image_dim: int,
    repeated: pa.Table,
    failures: dict | None = None,
) -> tuple[pa.Table, pa.Array]:
    """batch_problems with each row's reasons rendered (null = valid): what the embedding and
    validation tasks store with the rows."""
    table, problems = batch_problems(batch, mapping, image_dim, repeated, failures)
    return table, problems.render()


def check_batches(
    batches: Iterable[pa.RecordBatch],
    mapping: ColumnMapping | None,
    image_dim: int,
    repeated: pa.Table,
) -> Iterator[dict]:
    """Per raw catalog batch, its partial report (JSON-able): rows, rejected, rows per rule and
    the mapping's failed conversions."""
    for batch in batches:
        conversions: dict = {}
        _, problems = batch_problems(batch, mapping, image_dim, repeated, conversions)
        yield {
            "rows": problems.rows,
            "rejected": problems.rejected,
            "rule_counts": problems.counts(),
            "conversions": conversions,
        }


def catalog_report(partials: Iterable[dict]) -> ValidationReport:
    """The catalog's ValidationReport: the sum of check_batches partials."""
    parts = list(partials)
    conversions: dict = {}
    for part in parts:
        add_failures(conversions, part["conversions"])
    return summed_report("catalog", RULES, parts, conversions)


def validate_local_catalog(
    path: str | os.PathLike,
    mapping: ColumnMapping | None = None,
    image_dim: int = DEFAULT_IMAGE_DIM,
) -> ValidationReport:
    """Validate a local catalog in this process: footers and schemas first, then one pass over
    the id columns (every id, for the duplicate-id rule), then the rows, a batch at a time."""
    groups = checked_row_groups(path, mapping)
    ids = [row_group_ids(file, group, mapping) for file, group, _ in groups]
    repeated = repeated_ids_of(pa.chunked_array(ids, pa.string()))
    batches = (
        batch for file, group, _ in groups for batch in read_row_group(file, group, BATCH_ROWS)
    )
    return catalog_report(check_batches(batches, mapping, image_dim, repeated))
