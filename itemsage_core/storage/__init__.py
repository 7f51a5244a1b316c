"""Bytes on disks and object stores: local files (checksums, atomic writes), a root directory on
any filesystem (store), URIs, Parquet footers and row groups, Arrow IPC. Imports only
`itemsage_core.errors`."""
