"""A build's files as local files that match their manifest: in place on a local index root, or
fetched into a local cache directory from an object store (once per build id: a file already
cached and matching its checksum is not fetched again; a damaged one is)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from index_builder.layout import CENTROIDS, build_key
from itemsage_core.errors import ItemSageError
from itemsage_core.storage.files import sha256_file
from itemsage_core.storage.store import Store

CACHED_BUILDS_KEPT = 2  # per surface in the cache: the build loaded and the newest other one


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


def _matches(path: Path, described: dict) -> bool:
    return (
        path.is_file()
        and ("bytes" not in described or path.stat().st_size == described["bytes"])
        and sha256_file(path) == described["sha256"]
    )


def local_build(store: Store, manifest: dict, cache_dir: str | Path | None = None) -> Path:
    """A local directory holding every file of the build, each checked against the manifest
    (size and sha256); ItemSageError naming the first that is missing or does not match."""
    surface, build_id = manifest["surface"], manifest["build_id"]
    key = build_key(surface, build_id)
    if store.local:
        directory = store.local_path(key)
        for what, described in manifest_files(manifest):
            path = directory / described["path"]
            if not path.is_file():
                raise ItemSageError(f"{what}: {path} is missing")
            if not _matches(path, described):
                raise ItemSageError(
                    f"{what}: {path} does not match its checksum in the manifest "
                    "(truncated or corrupted)"
                )
        return directory
    directory = Path(cache_dir or default_cache_dir()) / surface / build_id
    for what, described in manifest_files(manifest):
        path = directory / described["path"]
        if _matches(path, described):
            continue
        source = f"{key}/{described['path']}"
        try:
            store.download(source, path)
        except FileNotFoundError:
            raise ItemSageError(f"{what}: {store.path(source)} is missing") from None
        if not _matches(path, described):
            path.unlink()
            raise ItemSageError(
                f"{what}: {store.path(source)} does not match its checksum in the manifest "
                "(truncated or corrupted)"
            )
    _forget_older(directory.parent, build_id)
    return directory


def _forget_older(surface_cache: Path, loaded: str) -> None:
    """Delete the surface's cached builds but `loaded` and the newest CACHED_BUILDS_KEPT - 1
    others."""
    others = sorted((p for p in surface_cache.iterdir() if p.name != loaded), reverse=True)
    for stale in others[CACHED_BUILDS_KEPT - 1 :]:
        shutil.rmtree(stale, ignore_errors=True)
