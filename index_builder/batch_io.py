"""Files of a batch query (`itemsage query --ids-file/--vectors-file`): the queries read, the
neighbours written, without Spark."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from index_builder.batch_search import Neighbours
from index_builder.partitioning import vectors_of
from itemsage_core.errors import ItemSageError
from itemsage_core.storage.files import write_atomic

NEIGHBOUR = pa.struct([("product_id", pa.string()), ("score", pa.float64())])


def read_ids(path: str | Path) -> list[str]:
    """Product ids: a Parquet file's `product_id` column, else one id per non-empty line."""
    path = Path(path)
    try:
        if path.suffix == ".parquet":
            return pq.read_table(path, columns=["product_id"]).column(0).to_pylist()
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError, KeyError, pa.ArrowException) as exc:
        raise ItemSageError(f"cannot read product ids from {path}: {exc}") from None


def read_vectors(path: str | Path, column: str = "embedding") -> tuple[list[str], np.ndarray]:
    """Query vectors and their names: a .npy matrix (never pickled objects; named by row
    number), or a Parquet file's `column` of equal-length lists (named by its `product_id`
    column when it has one)."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            vectors = np.load(path, allow_pickle=False)
            vectors = vectors.reshape(1, -1) if vectors.ndim == 1 else vectors
            return [str(i) for i in range(len(vectors))], vectors.astype(np.float32)
        table = pq.read_table(path)
        vectors = vectors_of(table.column(column))
        names = (
            table.column("product_id").to_pylist()
            if "product_id" in table.column_names
            else [str(i) for i in range(table.num_rows)]
        )
        return [str(n) for n in names], vectors
    except (OSError, ValueError, KeyError, pa.ArrowException) as exc:
        raise ItemSageError(f"cannot read query vectors from {path}: {exc}") from None


def neighbour_lists(found: Neighbours) -> pa.ListArray:
    """Each query's results as a list of (product_id, score), best first."""
    present = found.ids != None  # noqa: E711 (element-wise)
    offsets = np.concatenate([[0], np.cumsum(present.sum(axis=1))]).astype(np.int32)
    values = pa.StructArray.from_arrays(
        [pa.array(found.ids[present], pa.string()), pa.array(found.scores[present])],
        fields=list(NEIGHBOUR),
    )
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def unserved(index, product_ids: list[str]) -> list[int]:
    """The rows of `product_ids` that a loaded build (index_reader.ShardedIndex) does not
    serve, in order (looked up in its id -> (shard, label) map)."""
    where = index._where
    return [row for row, pid in enumerate(product_ids) if pid not in where]


def neighbours_table(
    queries: list[str], found: Neighbours, errors: list[str | None] | None = None
) -> pa.Table:
    """One row per query: `query`, `neighbours` (list of product_id, score; best first) and
    `error` (null when answered). With `errors`, `found` holds the rows of the queries without
    one, in order; a query with an error has no neighbours."""
    errors = [None] * len(queries) if errors is None else errors
    answered = np.array([error is None for error in errors], bool)
    if not answered.all():
        ids = np.full((len(queries), found.ids.shape[1]), None, object)
        scores = np.full(ids.shape, np.nan)
        ids[answered], scores[answered] = found.ids, found.scores
        found = Neighbours(ids, scores)
    return pa.table(
        {
            "query": pa.array(queries, pa.string()),
            "neighbours": neighbour_lists(found),
            "error": pa.array(errors, pa.string()),
        }
    )


def write_neighbours(table: pa.Table, out: str | None) -> None:
    """Parquet when `out` ends in .parquet, else JSON lines (to stdout when `out` is None); a
    file appears whole or not at all."""
    if out is None:
        sys.stdout.writelines(json.dumps(row) + "\n" for row in table.to_pylist())
        return
    if out.endswith(".parquet"):
        buffer = pa.BufferOutputStream()
        pq.write_table(table, buffer)
        write_atomic(out, buffer.getvalue().to_pybytes())
    else:
        write_atomic(out, "".join(json.dumps(row) + "\n" for row in table.to_pylist()))
