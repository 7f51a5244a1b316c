"""Checks of a command's inputs before Spark starts: a cheap mistake must fail in a second.

Each raises ItemSageError with one line naming the input and the fix: a catalog path that holds no
Parquet, a model directory that is not a valid checkpoint, a mapping that does not parse, a
surfaces config that does not parse, an embeddings table that does not exist. Object-store URIs
are left to the job (checking them needs credentials and the network).
"""

from __future__ import annotations

from itemsage_core.contracts.column_mapping import ColumnMapping, load_mapping
from itemsage_core.errors import ItemSageError
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
