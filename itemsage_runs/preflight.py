"""Checks of a command's inputs before Spark starts: a cheap mistake must fail in a second.

Each raises ItemSageError with one line naming the input and the fix: a catalog path that holds no
Parquet, a model directory that is not a valid checkpoint, a mapping that does not parse, a
surfaces config that does not parse, an embeddings table that does not exist, an output that
cannot be written (local paths and object stores alike: a probe file is written and removed).
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

from itemsage_core.contracts.column_mapping import ColumnMapping, load_mapping
from itemsage_core.errors import ItemSageError
from itemsage_core.storage.store import Store
from itemsage_core.storage.uris import is_local_path


def catalog_path(catalog: str, column_mapping: ColumnMapping | None = None) -> None:
    """A catalog (local or on an object store) must name Parquet files, whose first file has
    the mapping's sources."""
    from itemsage_core.storage.parquet_io import parquet_files, read_schema

    first = parquet_files(catalog)[0]
    if column_mapping is not None:
        column_mapping.check_source(read_schema(first))


def model_dir(path: str) -> dict:
    """The checkpoint's manifest, after its safety and checksum checks."""
    from itemsage_core.model.checkpoint import read_checkpoint_manifest

    return read_checkpoint_manifest(path)


def mapping(path: str | None) -> ColumnMapping | None:
    return load_mapping(path) if path else None


def catalog_mapping(catalog: str | None, path: str | None) -> ColumnMapping | None:
    """The mapping at `path` (None without one), checked against the `catalog` it maps when
    there is one."""
    column_mapping = mapping(path)
    if catalog:
        catalog_path(catalog, column_mapping)
    return column_mapping


def table(table_uri: str, version: int | None = None) -> None:
    """A local embeddings table must exist (`itemsage embed` creates it), and a pinned `version`
    of it must still have its files (not removed by a vacuum)."""
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError

    from itemsage_core.embedding.table_versions import require_readable

    if not is_local_path(table_uri):
        return
    if not DeltaTable.is_deltatable(table_uri):
        raise ItemSageError(
            f"no Delta table at {table_uri}: create it with `itemsage embed "
            f"--table {table_uri} ...` first, or check the path"
        )
    if version is not None:
        try:
            pinned = DeltaTable(table_uri, version=version)
        except DeltaError as exc:  # e.g. a version that does not exist
            raise ItemSageError(f"cannot read {table_uri} at version {version}: {exc}") from None
        require_readable(table_uri, version, table=pinned)


def writable(uri: str, option: str) -> None:
    """An output (`option` names it, e.g. `--out`) must be a folder this process can create and
    write, checked before any work: locally, its nearest existing folder takes a probe file; on
    an object store, a probe object is written under it and deleted."""
    store = Store(uri)
    if not store.local:
        key = f".itemsage-probe-{uuid.uuid4().hex}"
        try:
            store.write_bytes(key, b"")
            store.delete(key)
        except (OSError, ValueError) as exc:  # fsspec's errors for a bucket that is not there
            raise ItemSageError(
                f"{option} {uri} cannot be written ({type(exc).__name__}: {exc}): check the "
                "bucket, the credentials and their write permission"
            ) from None
        return
    path = Path(store.uri)
    if path.exists() and not path.is_dir():
        raise ItemSageError(f"{option} {uri} is a file, not a folder: choose another path")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise ItemSageError(
            f"{option} {uri} cannot be created: {existing} is a file; choose another path"
        )
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".itemsage-probe-"):
            pass
    except OSError as exc:
        raise ItemSageError(
            f"{option} {uri} cannot be written ({exc.strerror} in {existing}): choose a folder "
            "you can write to, or fix its permissions"
        ) from None
