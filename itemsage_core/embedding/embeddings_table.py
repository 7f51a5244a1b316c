"""The Delta table of product embeddings and its quarantine table: schemas, data files, commits.

Writers (Spark executors or one process) call `write_data_file` for each Arrow table they
produce: it writes one Parquet file under the table root and returns a plain-dict description
(path relative to the root, size, modification time, per-file statistics). A driver then calls
`commit_files` once, which commits every file in ONE Delta transaction through the `deltalake`
transaction API, tagged with an app transaction (`itemsage/<run_id>`, version 0) so that a retried
run sees that it already committed and commits nothing. Files written by a run that never commits
are orphans: invisible to readers, removed by `vacuum`. docs/embeddings-table.md has the contract.
"""

from __future__ import annotations

import json
import time
import uuid
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from itemsage_core.errors import ItemSageError
from itemsage_core.storage.parquet_io import filesystem_of

QUARANTINE_SUFFIX = "_quarantine"
# A run whose catalog is empty or has more than this share of rows quarantined does not replace
# the table (the sign of a broken export).
DEFAULT_MAX_QUARANTINE_SHARE = 0.5
EMBEDDING_SCHEMA = pa.schema(
    [
        pa.field("product_id", pa.string(), nullable=False),
        pa.field("embedding", pa.list_(pa.float32()), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("content_hash", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("embedded_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)
QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("product_id", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("raw_json", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("quarantined_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)
STATS_COLUMNS = (
    "product_id",
    "model_version",
    "content_hash",
    "run_id",
    "embedded_at",
    "reason",
    "quarantined_at",
)


def vector_column(vectors: np.ndarray) -> pa.Array:
    """An (n, dim) float32 matrix as the embeddings table's list<float> column (Spark's Arrow
    path rejects FixedSizeList)."""
    n, dim = vectors.shape
    offsets = np.arange(0, n * dim + 1, dim, dtype=np.int32)
    return pa.ListArray.from_arrays(offsets, pa.array(vectors.reshape(-1)))


def quarantine_uri(table_uri: str) -> str:
    return table_uri.rstrip("/") + QUARANTINE_SUFFIX


def file_stats(table: pa.Table) -> str:
    """Delta per-file statistics (numRecords, min/max/nullCount of the scalar columns)."""
    mins, maxs, nulls = {}, {}, {}
    for name in STATS_COLUMNS:
        if name not in table.column_names:
            continue
        column = table.column(name)
        nulls[name] = column.null_count
        if table.num_rows > column.null_count:
            low, high = pc.min_max(column).values()
            low, high = low.as_py(), high.as_py()
            if hasattr(low, "isoformat"):
                low = low.isoformat(timespec="milliseconds").replace("+00:00", "Z")
                high = high.isoformat(timespec="milliseconds").replace("+00:00", "Z")
            mins[name], maxs[name] = low, high
    return json.dumps(
        {"numRecords": table.num_rows, "minValues": mins, "maxValues": maxs, "nullCount": nulls}
    )


def write_data_file(table_uri: str, table: pa.Table, run_id: str) -> dict:
    """Write `table` as one Parquet file under the table root; describe it for the commit."""
    fs, root = filesystem_of(table_uri)
    name = f"part-{run_id}-{uuid.uuid4().hex}.snappy.parquet"
    fs.create_dir(root, recursive=True)
    path = f"{root.rstrip('/')}/{name}"
    pq.write_table(table, path, filesystem=fs, compression="snappy", row_group_size=50_000)
    info = fs.get_file_info(path)
    return {
        "path": name,
        "size": info.size,
        "rows": table.num_rows,
        "modification_time": int(time.time() * 1000),
        "stats": file_stats(table),
    }


def remove_tree(uri: str) -> None:
    """Delete a directory (local or object store) and everything under it, if it exists."""
    fs, path = filesystem_of(uri)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_dir(path)


def _s3_filesystem(options: dict[str, str]) -> pafs.FileSystem:
    """pyarrow's S3 filesystem configured from deltalake (object_store) storage options
    (`aws_access_key_id`, `AWS_ENDPOINT_URL`, `aws_allow_http`, ...; any case, `aws_` optional)."""
    opts = {k.lower().removeprefix("aws_"): str(v) for k, v in options.items()}
    endpoint = opts.get("endpoint_url") or opts.get("endpoint")
    kwargs = {
        "access_key": opts.get("access_key_id"),
        "secret_key": opts.get("secret_access_key"),
        "session_token": opts.get("session_token") or opts.get("token"),
        "region": opts.get("region") or opts.get("default_region"),
    }
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        if not host:  # a bare host:port
            scheme, host = "https", endpoint
        kwargs["endpoint_override"], kwargs["scheme"] = host, scheme
    elif opts.get("allow_http", "").lower() == "true":
        kwargs["scheme"] = "http"
    return pafs.S3FileSystem(**{k: v for k, v in kwargs.items() if v is not None})


def _read_filesystem(table_uri: str, storage_options: dict | None) -> pafs.FileSystem:
    """A native pyarrow filesystem rooted at the table (local, or an object store configured from
    `storage_options`, else from the environment as `write_data_file` is)."""
    scheme = urlparse(table_uri).scheme
    if storage_options and scheme in ("s3", "s3a"):
        fs, root = _s3_filesystem(storage_options), table_uri.split("://", 1)[1]
    else:
        fs, root = filesystem_of(table_uri)
    return pafs.SubTreeFileSystem(root.rstrip("/"), fs)


def read_table(
    table_uri: str,
    version: int | None = None,
    columns: list[str] | None = None,
    filter: pc.Expression | None = None,
    storage_options: dict | None = None,
) -> pa.Table:
    """The rows of a Delta table version (default: the latest); the one way this project reads a
    table from Python, and the one the docs give.

    deltalake's own readers (`DeltaTable.to_pyarrow_table`, `to_pyarrow_dataset().to_table()`,
    `to_pandas`) scan through a Python filesystem (`PyFileSystem(DeltaStorageHandler)`): the
    buffers it returns are Python objects, and Arrow's pool threads release the last of them
    after the scan has returned. When that happens while the interpreter is exiting, the thread
    cannot take the GIL, CPython ends it with pthread_exit inside a C++ destructor, and the
    process aborts ("terminate called without an active exception", exit 134), a few percent of
    runs. Here deltalake still lists the version's files (and refuses features pyarrow cannot
    read), but the scan goes through a native pyarrow filesystem, which holds no Python object,
    so the process exits cleanly. tests/test_delta_reads.py checks this in subprocesses.
    """
    from deltalake import DeltaTable

    table = DeltaTable(table_uri, version=version, storage_options=storage_options)
    if version is not None:  # a pinned version's files may have been vacuumed since
        from itemsage_core.embedding.table_versions import require_readable

        require_readable(table_uri, version, storage_options, table)
    dataset = table.to_pyarrow_dataset(filesystem=_read_filesystem(table_uri, storage_options))
    return dataset.to_table(columns=columns, filter=filter)


def app_id(run_id: str) -> str:
    return f"itemsage/{run_id}"


def committed_version(
    table_uri: str, run_id: str, storage_options: dict | None = None
) -> int | None:
    """The table version at which `run_id` committed, or None (no table, or not committed)."""
    from deltalake import DeltaTable

    if not DeltaTable.is_deltatable(table_uri, storage_options):
        return None
    table = DeltaTable(table_uri, storage_options=storage_options)
    if table.transaction_version(app_id(run_id)) is None:
        return None
    for entry in table.history():
        if entry.get("itemsage_run_id") == run_id:
            return int(entry["version"])
    return table.version()


NO_TABLE = -1  # a read_version meaning "there was no table when the run started"
WRITER_APP = "itemsage/writer"  # the app transaction every version-checked commit updates


def table_version(table_uri: str, storage_options: dict | None = None) -> int:
    """The table's current version, or NO_TABLE."""
    from deltalake import DeltaTable

    if not DeltaTable.is_deltatable(table_uri, storage_options):
        return NO_TABLE
    return DeltaTable(table_uri, storage_options=storage_options).version()


def require_version(table_uri: str, read_version: int, storage_options: dict | None = None) -> int:
    """The table's version, which must still be `read_version` (NO_TABLE: no table yet);
    ItemSageError when another writer committed since."""
    now = table_version(table_uri, storage_options)
    if now != read_version:
        raise _moved(table_uri, read_version, f"version {now}")
    return now


def _moved(table_uri: str, read_version: int, now: str) -> ItemSageError:
    was = "no table" if read_version == NO_TABLE else f"version {read_version}"
    return ItemSageError(
        f"{table_uri} changed while this run was working ({was} when it started, now {now}): "
        "another writer committed first. This run committed nothing there; rerun it to work "
        "from the new version"
    )


def commit_files(
    table_uri: str,
    files: list[dict],
    schema: pa.Schema,
    mode: str,
    run_id: str,
    metadata: dict,
    storage_options: dict | None = None,
    read_version: int | None = None,
) -> int | None:
    """Commit `files` in one transaction (mode 'overwrite' or 'append'); returns the new version,
    or None when this run had already committed (nothing is done then).

    `read_version` is the version the run started from (NO_TABLE: none): if another writer
    committed since, the commit is refused rather than overwriting that writer's rows. Two
    commits racing past that check are refused by Delta's conflict detection: the transaction
    is made on the `read_version` snapshot and carries the app transaction WRITER_APP, which
    any two such commits both update (so they conflict even when neither removes a file).
    """
    from deltalake import DeltaTable, Schema
    from deltalake.exceptions import CommitFailedError, DeltaError
    from deltalake.transaction import (
        AddAction,
        CommitProperties,
        Transaction,
        create_table_with_add_actions,
    )

    if committed_version(table_uri, run_id, storage_options) is not None:
        return None
    adds = [
        AddAction(f["path"], f["size"], {}, f["modification_time"], True, f["stats"]) for f in files
    ]
    transactions = [Transaction(app_id(run_id), 0)]
    if read_version is not None:
        require_version(table_uri, read_version, storage_options)
        transactions.append(Transaction(WRITER_APP, read_version + 1))
    props = CommitProperties(
        custom_metadata={"itemsage_run_id": run_id, "itemsage": json.dumps(metadata)},
        app_transactions=transactions,
    )
    if not DeltaTable.is_deltatable(table_uri, storage_options):
        try:
            create_table_with_add_actions(
                table_uri,
                Schema.from_arrow(schema),
                adds,
                mode="error",
                storage_options=storage_options,
                commit_properties=props,
            )
        except DeltaError as exc:
            if "already exists" not in str(exc):
                raise
            raise _moved(table_uri, NO_TABLE, "a table") from None
        return 0
    table = DeltaTable(table_uri, storage_options=storage_options, version=read_version)
    current = pa.schema(table.schema().to_arrow())
    if not current.equals(schema):
        raise ItemSageError(f"{table_uri} has schema {current}, this run writes {schema}")
    try:
        table.create_write_transaction(adds, mode=mode, schema=schema, commit_properties=props)
    except CommitFailedError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _moved(table_uri, table.version(), f"a conflicting commit: {reason}") from None
    return DeltaTable(table_uri, storage_options=storage_options).version()


def vacuum(
    table_uri: str, retention_hours: int, dry_run: bool = False, storage_options: dict | None = None
) -> list[str]:
    """Delete the table's files that are older than `retention_hours` and not in its current
    version: files of versions replaced since (time travel to those versions stops working)
    and orphans of runs that never committed. Returns the files (to be) deleted."""
    from deltalake import DeltaTable

    table = DeltaTable(table_uri, storage_options=storage_options)
    return table.vacuum(
        retention_hours=retention_hours,
        dry_run=dry_run,
        enforce_retention_duration=False,
        full=True,
    )
