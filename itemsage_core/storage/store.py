"""A root directory on any filesystem: a local path, or an fsspec URI (`s3://`, `gs://`,
`abfs://`, `hdfs://`, ...). Keys are `/`-separated paths under the root.

fsspec rather than pyarrow's filesystems because fsspec exposes the one operation an object store
needs to switch between versions without a rename: create-if-absent (S3 `If-None-Match: *`, GCS
`ifGenerationMatch=0`, Azure `If-None-Match: *`). Credentials and endpoints come from the
environment (`AWS_*`, `GOOGLE_APPLICATION_CREDENTIALS`, `AZURE_STORAGE_*`) and never enter a
Store's text or pickle, which is only its URI.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import uuid
from pathlib import Path

from itemsage_core.errors import ItemSageError
from itemsage_core.storage.files import create_atomic, write_atomic
from itemsage_core.storage.uris import absolute_uri, scheme

# How each store's fsspec implementation creates an object only if it is absent, atomically.
# Any other protocol gets a check, then a write (not atomic: docs/indexes.md).
CREATE_IF_ABSENT = {
    "s3": {"mode": "create"},
    "s3a": {"mode": "create"},
    "gs": {"mode": "create"},
    "gcs": {"mode": "create"},
    "abfs": {"overwrite": False},
    "abfss": {"overwrite": False},
    "az": {"overwrite": False},
}
EXTRAS = {"gs": "gcs", "gcs": "gcs", "abfs": "azure", "abfss": "azure", "az": "azure"}


def _fs_options(protocol: str) -> dict:
    """fsspec options from the environment that its implementations do not read themselves:
    an S3 endpoint and region as the embedding table reads them (AWS_ENDPOINT_URL, AWS_REGION)."""
    if protocol not in ("s3", "s3a"):
        return {}
    client = {
        "endpoint_url": os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
        "region_name": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
    }
    return {"client_kwargs": {k: v for k, v in client.items() if v}}


class Store:
    """One root directory, local or remote, with the few operations the index layout needs."""

    def __init__(self, root: str | os.PathLike):
        text = os.fspath(root)
        self.protocol = scheme(text)
        self.local = self.protocol == "file"
        self.uri = absolute_uri(text.removeprefix("file://")) if self.local else text.rstrip("/")

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    def __getstate__(self) -> dict:  # the URI only: executors make their own filesystem
        return {"uri": self.uri, "local": self.local, "protocol": self.protocol}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    @functools.cached_property
    def fs(self):
        import fsspec

        try:
            return fsspec.filesystem(self.protocol, **_fs_options(self.protocol))
        except (ImportError, ValueError) as exc:
            extra = EXTRAS.get(self.protocol)
            fix = f" (pip install 'itemsage-spark[{extra}]')" if extra else ""
            raise ItemSageError(f"cannot open {self.uri}: {exc}{fix}") from None

    def path(self, key: str) -> str:
        """The key's full path, as the filesystem (or a person) names it."""
        return f"{self.uri}/{key}" if key else self.uri

    def _fs_path(self, key: str) -> str:
        return self.fs._strip_protocol(self.path(key))

    def local_path(self, key: str) -> Path:
        assert self.local, self
        return Path(self.path(key))

    def exists(self, key: str) -> bool:
        """Whether the key exists, never from a cached listing."""
        path = self._fs_path(key)
        self.fs.invalidate_cache(path)
        return self.fs.exists(path)

    def read_bytes(self, key: str) -> bytes:
        return self.fs.cat_file(self._fs_path(key))

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write (or replace) one file; a reader sees the old bytes or the new, never a part."""
        if self.local:
            write_atomic(self.local_path(key), data)
        else:
            self.fs.pipe_file(self._fs_path(key), data)

    def create(self, key: str, data: bytes) -> bool:
        """Create the file with `data` unless it exists (False then): one atomic
        create-if-absent on local disks, S3, GCS and Azure (of two racing creators exactly one
        gets True); elsewhere a check, then a write."""
        if self.local:
            return create_atomic(self.local_path(key), data)
        conditional = CREATE_IF_ABSENT.get(self.protocol)
        if conditional is None and self.exists(key):
            return False
        try:
            self.fs.pipe_file(self._fs_path(key), data, **(conditional or {}))
        except FileExistsError:
            return False
        return True

    def upload(self, local_file: str | Path, key: str) -> None:
        """Move a finished local file to the key (local roots: a move; others: an upload)."""
        if self.local:
            target = self.local_path(key)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(local_file, target)
        else:
            self.fs.put_file(str(local_file), self._fs_path(key))

    def copy(self, source: str, key: str) -> None:
        """Copy a file within the root (a hard link on local disks, a server-side copy on
        object stores: no bytes pass through this process)."""
        if not self.local:
            self.fs.copy(self._fs_path(source), self._fs_path(key))
            return
        target = self.local_path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(self.local_path(source), target)
        except OSError:  # a filesystem without hard links
            shutil.copyfile(self.local_path(source), target)

    def download(self, key: str, local_file: str | Path) -> None:
        """Copy the key to a local file, whole or not at all (a temporary name, then a rename)."""
        target = Path(local_file)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
        try:
            self.fs.get_file(self._fs_path(key), str(partial))
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)

    def sizes(self, key: str) -> dict[str, int]:
        """Name -> bytes of the files directly under the key ({} when there are none); names of
        sub-directories map to -1. Never from a cached listing."""
        path = self._fs_path(key)
        self.fs.invalidate_cache(path)
        try:
            found = self.fs.ls(path, detail=True)
        except FileNotFoundError:
            return {}
        return {
            entry["name"].rstrip("/").rsplit("/", 1)[-1]: (
                int(entry["size"]) if entry["type"] == "file" else -1
            )
            for entry in found
            if entry["name"].rstrip("/") != path.rstrip("/")
        }

    def names(self, key: str) -> list[str]:
        """The names directly under the key, sorted ([] when there are none)."""
        return sorted(self.sizes(key))

    def delete(self, key: str) -> None:
        """Delete the key and everything under it; nothing when it is absent."""
        path = self._fs_path(key)
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(path, recursive=True)
        self.fs.invalidate_cache(path)


def as_store(root: str | os.PathLike | Store) -> Store:
    return root if isinstance(root, Store) else Store(root)
