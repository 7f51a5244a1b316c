"""Small helpers for artefacts on a local (or mounted) filesystem: checksums, atomic writes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(path: str | Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, flush it to disk, then rename it over
    `path`: a reader sees the old content or the new, never a part."""
    path = Path(path)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(staging, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(staging, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def is_local_path(uri: str) -> bool:
    """True for a filesystem path, False for a URI with a scheme (s3://, gs://, file://, ...)."""
    return "://" not in uri


def absolute_uri(uri: str) -> str:
    """A local path made absolute (so that records of it stay valid from any directory); a URI
    with a scheme unchanged."""
    return os.path.abspath(uri) if is_local_path(uri) else uri
