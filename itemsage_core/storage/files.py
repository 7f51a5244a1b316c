"""Files on a local (or mounted) filesystem: checksums and atomic, durable writes."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

# Files that can run code when loaded (pickles and formats built on them): a model folder that
# holds one is refused, so loading a model never executes code (checkpoints, text models).
REFUSED_SUFFIXES = {".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt", ".joblib", ".npy"}


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _staged(path: Path, data: bytes) -> Path:
    """`data` in a new temporary file beside `path`, flushed to disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(staging, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return staging


def _sync_directory(directory: Path) -> None:
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write `data` to a temporary file beside `path`, flush it to disk, then rename it over
    `path`: a reader sees the old content or the new, never a part, even after a power loss."""
    path = Path(path)
    staging = _staged(path, data.encode() if isinstance(data, str) else data)
    os.replace(staging, path)
    _sync_directory(path.parent)


def create_atomic(path: str | Path, data: bytes) -> bool:
    """Create `path` holding `data` unless it exists (False then), in one step: a fully written
    temporary file is hard-linked to the name, which fails when the name exists."""
    path = Path(path)
    staging = _staged(path, data)
    try:
        os.link(staging, path)
    except FileExistsError:
        return False
    finally:
        staging.unlink()
    _sync_directory(path.parent)
    return True
