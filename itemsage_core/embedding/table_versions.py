"""Whether a pinned version of a Delta table can still be read, checked from Python before any
scan: a vacuum deletes the data files of versions replaced more than its retention ago, while
their log entries stay, so Delta still opens such a version and only the scan fails (Spark's
`[PATH_NOT_FOUND]`). `require_readable` turns that into one actionable error naming the vacuum
and the oldest version that can still be read.

The check lists only the directories the version's files live in (one listing for an
unpartitioned table, whatever its file count, on a local disk or an object store) and compares
names; when files are missing it walks back from the latest version to find the oldest one from
which every later version is complete, and looks for a vacuum in the table's history.
"""

from __future__ import annotations

import posixpath

import pyarrow.fs as pafs

from itemsage_core.errors import ItemSageError
from itemsage_core.storage.parquet_io import filesystem_of


def _data_paths(table) -> list[str]:
    """The version's data files as its add actions name them (relative to the table root, or
    absolute URIs for files outside it)."""
    return [str(p) for p in table.get_add_actions(flatten=True).column("path").to_pylist()]


class _Listing:
    """The names present in the table's directories, listed once per directory."""

    def __init__(self, table_uri: str, storage_options: dict | None):
        from itemsage_core.embedding.embeddings_table import _read_filesystem

        self.fs = _read_filesystem(table_uri, storage_options)
        self.dirs: dict[str, set[str]] = {}

    def _names(self, directory: str) -> set[str]:
        if directory not in self.dirs:
            selector = pafs.FileSelector(directory, allow_not_found=True)
            self.dirs[directory] = {
                posixpath.basename(info.path)
                for info in self.fs.get_file_info(selector)
                if info.type == pafs.FileType.File
            }
        return self.dirs[directory]

    def missing(self, paths: list[str]) -> list[str]:
        """The paths among `paths` that do not exist."""
        gone = []
        for path in paths:
            if "://" in path or path.startswith("/"):  # a file outside the table's root
                fs, where = filesystem_of(path)
                if fs.get_file_info(where).type == pafs.FileType.NotFound:
                    gone.append(path)
            elif posixpath.basename(path) not in self._names(posixpath.dirname(path)):
                gone.append(path)
        return gone


def oldest_readable(
    table_uri: str, storage_options: dict | None = None, listing=None
) -> int | None:
    """The oldest version from which every version up to the latest has all its data files
    (None when not even the latest has)."""
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError

    listing = listing or _Listing(table_uri, storage_options)
    table = DeltaTable(table_uri, storage_options=storage_options)
    oldest = None
    for version in range(table.version(), -1, -1):
        try:
            table.load_as_version(version)
        except DeltaError:  # its log entry is gone (log retention): not readable
            break
        if listing.missing(_data_paths(table)):
            break
        oldest = version
    return oldest


def _vacuumed_after(table_uri: str, version: int, storage_options: dict | None) -> bool:
    """Whether the table's history has a vacuum after `version`."""
    from deltalake import DeltaTable

    history = DeltaTable(table_uri, storage_options=storage_options).history()
    return any(
        str(entry.get("operation", "")).upper().startswith("VACUUM")
        and int(entry.get("version", -1)) > version
        for entry in history
    )


def require_readable(
    table_uri: str, version: int, storage_options: dict | None = None, table=None
) -> None:
    """Nothing when every data file of `version` exists; else ItemSageError naming the vacuum
    that removed them (or the missing files, when no vacuum did) and the oldest readable
    version. The table and the version must exist (DeltaTable opens it); `table`: the version
    already opened."""
    from deltalake import DeltaTable

    if table is None:
        table = DeltaTable(table_uri, version=version, storage_options=storage_options)
    listing = _Listing(table_uri, storage_options)
    paths = _data_paths(table)
    gone = listing.missing(paths)
    if not gone:
        return
    oldest = oldest_readable(table_uri, storage_options, listing)
    if _vacuumed_after(table_uri, version, storage_options):
        why = "its files were removed by a vacuum"
    else:
        why = (
            f"{len(gone)} of its {len(paths)} data files are missing (first: {gone[0]}) and no "
            "vacuum in the table's history removed them"
        )
    if oldest is None:
        raise ItemSageError(
            f"version {version} of {table_uri} cannot be read: {why}; no version of the table "
            "has all its files any more (restore them, or rebuild the table with `itemsage embed`)"
        )
    raise ItemSageError(
        f"version {version} of {table_uri} cannot be read: {why} (oldest readable version: "
        f"{oldest}); pass --table-version {oldest} or later, or omit it for the latest"
    )
