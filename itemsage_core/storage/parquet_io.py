"""Reading and writing Parquet datasets given as a file, a directory or a glob, on a local
disk or an object store (`s3://`, `gs://`, `abfs://`: read through pyarrow's own filesystems,
credentials from the environment, no Hadoop connector). Files are named as they were given: a
path, or a URI with its scheme."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from itemsage_core.errors import ItemSageError
from itemsage_core.storage.uris import is_local_path

GLOB_CHARS = set("*?[")


def filesystem_of(uri: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow's filesystem of a local path or a URI, and the path within it."""
    if is_local_path(uri):
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ItemSageError(f"cannot open {uri}: {exc}") from None


def _glob_regex(pattern: str) -> re.Pattern:
    """A glob as glob.glob(recursive=True) reads it: `*` and `?` within one path part, `**`
    across parts, `[...]` a character class."""
    parts = re.split(r"(\*\*/?|\*|\?|\[[^]]*\])", pattern)
    glob = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile(
        "".join(
            glob.get(p, p if p.startswith("[") and p.endswith("]") else re.escape(p)) for p in parts
        )
        + r"\Z"
    )


def _hidden(relative: str) -> bool:
    """A file under a name starting with '_' or '.', which Spark and pyarrow skip."""
    return any(part.startswith(("_", ".")) for part in relative.split("/"))


def _listed(fs: pafs.FileSystem, root: str, pattern: re.Pattern | None) -> list[pafs.FileInfo]:
    """The files at `root`: itself, or the directory's *.parquet files not hidden (or, with a
    glob's `pattern`, the files under it that match); FileNotFoundError when there is none."""
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.File and pattern is None:
        return [info]
    if info.type != pafs.FileType.Directory:
        if pattern is None:
            raise FileNotFoundError(root)
        return []
    found = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    base = len(root.rstrip("/")) + 1
    return sorted(
        (
            f
            for f in found
            if f.type == pafs.FileType.File
            and (
                pattern.match(f.path)
                if pattern
                else f.path.endswith(".parquet") and not _hidden(f.path[base:])
            )
        ),
        key=lambda f: f.path,
    )


def parquet_files(path: str | os.PathLike) -> list[str]:
    """The Parquet files a path or URI names: a file, every *.parquet under a directory (none
    under a file or folder whose name starts with '_' or '.'), or a glob (`*`, `?`, `[...]`)."""
    return [name for name, _, _ in parquet_stamps(path)]


def parquet_stamps(path: str | os.PathLike) -> list[tuple[str, int, int]]:
    """(file, bytes, modification time in ns) of each of parquet_files(path), from one listing."""
    text = os.fspath(path)
    base, pattern = text, None
    if GLOB_CHARS & set(text):  # list under the folder before the first wildcard
        base = text[: min(text.index(c) for c in GLOB_CHARS if c in text)].rsplit("/", 1)[0]
    fs, root = filesystem_of(base)
    if base != text:
        pattern = _glob_regex(root + text[len(base) :])
    try:
        files = _listed(fs, root, pattern)
    except FileNotFoundError:
        raise ItemSageError(f"no such file or directory: {text}") from None
    except OSError as exc:
        raise ItemSageError(f"cannot list {text}: {exc}") from None
    if not files:
        raise ItemSageError(f"no Parquet files found at {text}")
    return [(_named(text, f.path), f.size, f.mtime_ns or 0) for f in files]


def _named(given: str, path: str) -> str:
    """A listed file's `path` named as `given` was: relative or absolute, or a URI."""
    if "://" in given:
        return given.split("://", 1)[0] + "://" + path
    return path if os.path.isabs(given) else os.path.relpath(path)


def open_parquet(file: str, **options) -> pq.ParquetFile:
    """One Parquet file (a path or a URI), opened through its filesystem."""
    fs, path = filesystem_of(file)
    return pq.ParquetFile(path, filesystem=fs, **options)


def read_schema(file: str) -> pa.Schema:
    """One Parquet file's Arrow schema, from its footer."""
    try:
        return open_parquet(file).schema_arrow
    except (pa.ArrowInvalid, OSError) as exc:
        raise ItemSageError(f"cannot read Parquet at {file}: {exc}") from None


def footers(path: str | os.PathLike) -> list[tuple[str, pq.FileMetaData]]:
    """(file, footer metadata) of every file of the dataset at `path`; a file that is not
    Parquet (or cannot be opened) is one ItemSageError naming it."""
    out = []
    for file in parquet_files(path):
        try:
            out.append((file, open_parquet(file).metadata))
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
    for batch in open_parquet(file, pre_buffer=True).iter_batches(
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


def parquet_dataset(path: str | os.PathLike):
    """A pyarrow dataset of the Parquet files at `path` (parquet_files), local or remote."""
    import pyarrow.dataset as ds  # imports pandas: only where a whole catalog is read

    files = parquet_files(path)
    fs = filesystem_of(files[0])[0]
    return ds.dataset([filesystem_of(f)[1] for f in files], format="parquet", filesystem=fs)


def read_parquet(path: str | os.PathLike, columns: list[str] | None = None) -> pa.Table:
    """The whole dataset at `path` as one table (for in-process work on modest sizes)."""
    try:
        return parquet_dataset(path).to_table(columns=columns)
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
