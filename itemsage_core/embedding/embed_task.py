"""One embedding task, without Spark: catalog batches in, table data files out.

The embedding job (jobs/embed_catalog.py) runs `embed_task` inside each Spark task; a benchmark or
a test can run the very same code in one process (bench/gpu_bench.py does, on a GPU). A task maps,
conforms and checks raw catalog rows (or takes rows already checked, with a `reason` column),
embeds the valid ones, quarantines the others, and writes one data file into each table's location:
it returns their descriptions for the driver to commit, the embeddings file's with the vocabulary
coverage counts of the rows it embedded (itemsage_core/features/vocab_coverage.py), the first
file's with the column mapping's failed conversions of all its rows. An incremental run's
`carry_task` writes rows it carries over unchanged (already embeddings-table rows) the same way.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator

import pyarrow as pa

from itemsage_core.contracts.catalog_check import BATCH_ROWS, check_batch
from itemsage_core.contracts.column_mapping import ColumnMapping
from itemsage_core.embedding.batch_embedder import BatchEmbedder
from itemsage_core.embedding.embeddings_table import EMBEDDING_SCHEMA, write_data_file
from itemsage_core.storage.parquet_io import read_row_group

REASON = "reason"


def row_group_slices(
    groups: list[tuple[str, int, int]], slots: int, min_rows: int = BATCH_ROWS
) -> list[tuple[str, int, int, int]]:
    """Work items (file, row_group, start, stop): every row group, cut into row ranges when
    there are fewer groups than 2 x `slots` (task slots), none under `min_rows` rows."""
    per_group = max(1, -(-2 * slots // max(1, len(groups))))
    items = []
    for file, group, rows in groups:
        parts = max(1, min(per_group, rows // min_rows))
        bounds = [rows * i // parts for i in range(parts + 1)]
        items += [(file, group, bounds[i], bounds[i + 1]) for i in range(parts)]
    return items


def read_slices(items: Iterable[tuple[str, int, int, int]]) -> Iterator[pa.RecordBatch]:
    """The raw catalog rows of row_group_slices work items, read with pyarrow."""
    for file, group, start, stop in items:
        yield from read_row_group(file, group, BATCH_ROWS, start, stop)


def embed_task(
    batches: Iterable[pa.RecordBatch],
    embedder: BatchEmbedder,
    targets: dict[str, str],
    run_id: str,
    started: dt.datetime,
    image_dim: int,
    mapping: ColumnMapping | None,
    repeated: pa.Table,
) -> list[dict]:
    """Embed or quarantine every row of `batches`; write one file per table that got rows into
    `targets` ("embeddings", "quarantine": table locations); return the files' descriptions
    (write_data_file's, plus `kind`, `coverage`: the embedded rows' vocabulary coverage counts
    as JSON on the embeddings file, None on the quarantine file, and `conversions`: the
    mapping's failed conversions of raw rows as JSON (column_mapping.add_failures) on the first
    file, None on the other). Every input row lands in exactly one file."""
    good, bad, coverage, conversions = [], [], {}, {}
    for batch in batches:
        if REASON in batch.schema.names:
            table = pa.table(batch)
            reasons = table.column(REASON)
            table = table.drop_columns([REASON])
        else:
            table, reasons = check_batch(batch, mapping, image_dim, repeated, conversions)
        embedded, quarantined = embedder.embed_or_quarantine(
            table, reasons, run_id, started, coverage
        )
        good += [embedded] if embedded is not None else []
        bad += [quarantined] if quarantined is not None else []
    described = []
    for kind, tables, counts in (
        ("embeddings", good, json.dumps(coverage)),
        ("quarantine", bad, None),
    ):
        if tables:
            described.append(
                {
                    "kind": kind,
                    **write_data_file(targets[kind], pa.concat_tables(tables), run_id),
                    "coverage": counts,
                    "conversions": None if described else json.dumps(conversions),
                }
            )
    return described


def carry_task(batches: Iterable[pa.RecordBatch], target: str, run_id: str) -> list[dict]:
    """Write embeddings-table rows carried over unchanged as one data file into `target` (the
    embeddings table's location); return its description, in embed_task's form without coverage
    or conversions (the rows are not encoded or mapped again), or none when there are no rows."""
    tables = [pa.table(b) for b in batches]
    if not sum(t.num_rows for t in tables):
        return []
    rows = pa.concat_tables(tables).select(EMBEDDING_SCHEMA.names).cast(EMBEDDING_SCHEMA)
    return [
        {
            "kind": "embeddings",
            **write_data_file(target, rows, run_id),
            "coverage": None,
            "conversions": None,
        }
    ]
