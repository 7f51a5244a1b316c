"""A build's files as local files that match their manifest: in place on a local index root, or
fetched into a local cache directory from an object store (once per build: a file already cached
and matching its checksum is not fetched again; a damaged one is).

The cache holds `<cache_dir>/<root digest>/<surface>/<build_id>/`. A process holds a shared lock
on a cached build while it fetches and loads it; the eviction of older builds skips any build
another process holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from index_builder.layout import CENTROIDS, build_key
from itemsage_core.errors import ItemSageError
from itemsage_core.storage.files import sha256_file
from itemsage_core.storage.store import Store

CACHED_BUILDS_KEPT = 2  # per surface in the cache: the build loaded and the newest other one
LOCK = ".lock"


def default_cache_dir() -> Path:
    """Where builds fetched from object stores are cached: $ITEMSAGE_CACHE_DIR, else
    $XDG_CACHE_HOME/itemsage/indexes (~/.cache/itemsage/indexes)."""
    if os.environ.get("ITEMSAGE_CACHE_DIR"):
        return Path(os.environ["ITEMSAGE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "itemsage" / "indexes"


def manifest_files(manifest: dict) -> list[tuple[str, dict]]:
    """(what, {path, bytes, sha256}) of every file a build's manifest lists."""
    files = [
        (f"shard {shard['shard']}", described)
        for shard in manifest["shards"]
        for described in shard["files"].values()
    ]
    if manifest.get("centroids"):
        files.append(("centroids", {"path": CENTROIDS, **manifest["centroids"]}))
    return files


def _problem(path: Path, described: dict) -> str | None:
    """Why the local file does not match its manifest entry (None when it does)."""
    if not path.is_file():
        return "is missing"
    if "bytes" in described and path.stat().st_size != described["bytes"]:
        return "does not match its checksum in the manifest (truncated or corrupted)"
    if sha256_file(path) != described["sha256"]:
        return "does not match its checksum in the manifest (truncated or corrupted)"
    return None


@contextlib.contextmanager
def local_build(
    store: Store, manifest: dict, cache_dir: str | Path | None = None
) -> Iterator[Path]:
    """A local directory holding every file of the build, each checked against the manifest
    (size and sha256), for the duration of the context; ItemSageError naming the first file
    that is missing or does not match (on the store itself, for a cached build)."""
    key = build_key(manifest["surface"], manifest["build_id"])
    if store.local:
        directory = store.local_path(key)
        for what, described in manifest_files(manifest):
            problem = _problem(directory / described["path"], described)
            if problem:
                raise ItemSageError(f"{what}: {directory / described['path']} {problem}")
        yield directory
        return
    root = hashlib.sha256(store.uri.encode()).hexdigest()[:16]
    directory = Path(cache_dir or default_cache_dir()) / root / key.replace("/builds/", "/")
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        for what, described in manifest_files(manifest):
            path = directory / described["path"]
            if _problem(path, described) is None:
                continue
            source = f"{key}/{described['path']}"
            try:
                store.download(source, path)
            except FileNotFoundError:
                raise ItemSageError(f"{what}: {store.path(source)} is missing") from None
            problem = _problem(path, described)
            if problem:
                path.unlink(missing_ok=True)
                raise ItemSageError(f"{what}: {store.path(source)} {problem}")
        yield directory
    _forget_older(directory.parent, directory.name)


def _forget_older(surface_cache: Path, loaded: str) -> None:
    """Delete the surface's cached builds but `loaded` and the newest CACHED_BUILDS_KEPT - 1
    others, skipping any that another process holds."""
    others = sorted((p for p in surface_cache.iterdir() if p.name != loaded), reverse=True)
    for stale in others[CACHED_BUILDS_KEPT - 1 :]:
        try:
            with open(stale / LOCK, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(stale)
        except OSError:  # held by another process (or gone): it stays for a later eviction
            continue
