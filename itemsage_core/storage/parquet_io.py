"""Reading and writing Parquet datasets given as a file, a directory or a glob."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from itemsage_core.errors import ItemSageError

GLOB_CHARS = set("*?[")


def parquet_files(path: str | os.PathLike) -> list[str]:
    """The Parquet files a path names: a file, every *.parquet under a directory (none under a
    file or folder whose name starts with '_' or '.', as Spark and pyarrow skip them), or a glob."""
    text = os.fspath(path)
    if GLOB_CHARS & set(text):
        files = sorted(f for f in glob.glob(text, recursive=True) if os.path.isfile(f))
    elif os.path.isdir(text):
        root = Path(text)
        files = sorted(
            str(p)
            for p in root.rglob("*.parquet")
            if not any(part.startswith(("_", ".")) for part in p.relative_to(root).parts)
        )
    elif os.path.isfile(text):
        files = [text]
    else:
        raise ItemSageError(f"no such file or directory: {text}")
    if not files:
        raise ItemSageError(f"no Parquet files found at {text}")
    return files


def footers(path: str | os.PathLike) -> list[tuple[str, pq.FileMetaData]]:
    """(file, footer metadata) of every file of the dataset at `path`; a file that is not
    Parquet (or cannot be opened) is one ItemSageError naming it."""
    out = []
    for file in parquet_files(path):
        try:
            out.append((file, pq.ParquetFile(file).metadata))
        except (pa.ArrowInvalid, OSError) as exc:
            raise ItemSageError(f"cannot read Parquet at {file}: {exc}") from None
    return out


def row_groups_of(file: str, meta: pq.FileMetaData) -> list[tuple[str, int, int]]:
    """(file, row group, rows) of every row group of one file, from its footer."""
    return [(file, i, meta.row_group(i).num_rows) for i in range(meta.num_row_groups)]


def row_groups(path: str | os.PathLike) -> list[tuple[str, int, int]]:
    """(file, row group, rows) of every row group of the dataset at `path`, from the footers."""
    return [group for file, meta in footers(path) for group in row_groups_of(file, meta)]


def read_row_group(
    file: str, row_group: int, batch_rows: int, start: int = 0, stop: int | None = None
) -> Iterator[pa.RecordBatch]:
    """Rows [start, stop) of one row group of one file, in batches of at most `batch_rows`.
    One thread: the caller (a Spark task) is the unit of parallelism."""
    offset = 0
    for batch in pq.ParquetFile(file, pre_buffer=True).iter_batches(
        batch_size=batch_rows, row_groups=[row_group], use_threads=False
    ):
        low, high = (
            max(start - offset, 0),
            len(batch) if stop is None else min(stop - offset, len(batch)),
        )
        offset += len(batch)
        if high > low:
            yield batch.slice(low, high - low)
        if stop is not None and offset >= stop:
            return


def read_parquet(path: str | os.PathLike, columns: list[str] | None = None) -> pa.Table:
    """The whole dataset at `path` as one table (for in-process work on modest sizes)."""
    try:
        import pyarrow.dataset as ds  # imports pandas: only where a whole catalog is read

        return ds.dataset(parquet_files(path), format="parquet").to_table(columns=columns)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ItemSageError(f"cannot read Parquet at {os.fspath(path)}: {exc}") from None


def write_parquet_dataset(
    table: pa.Table, directory: str | os.PathLike, rows_per_file: int = 50_000
) -> list[str]:
    """Write `table` as part-NNNNN.parquet files in a fresh `directory`; returns the paths.

    Files are written under a temporary name and renamed, so a reader never sees a partial file.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("part-*.parquet"):
        stale.unlink()
    paths = []
    for i, start in enumerate(range(0, max(table.num_rows, 1), rows_per_file)):
        final = out / f"part-{i:05d}.parquet"
        partial = out / f".{final.name}.tmp"
        pq.write_table(table.slice(start, rows_per_file), partial, row_group_size=10_000)
        os.replace(partial, final)
        paths.append(str(final))
    return paths
