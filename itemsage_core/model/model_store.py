"""Checkpoints on object stores (`train --out s3://...`, `--model s3://...`).

    URI/checkpoint.json                     the manifest (model/checkpoint.py), plus `files`
    URI/files/<model_version>/config.json   the files it lists, one folder per version
    URI/files/<model_version>/vocabulary.json
    URI/files/<model_version>/model.safetensors

An object store has no rename, so a model becomes visible by one write: its files go under a
folder of their own version, then checkpoint.json replaces the previous manifest. A run killed
before that leaves the previous model as it was; the previous version's folder is kept (a reader
may be fetching it), older ones are removed. A manifest without `files` names files beside it,
so a checkpoint directory copied to a bucket as it is loads too.

Readers fetch a model once per machine into a local cache keyed by model_version and verify
every file against its SHA-256 there (a damaged object is one error naming it); concurrent
fetches race to rename and one wins.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path

from itemsage_core.errors import ItemSageError
from itemsage_core.storage.cache import cache_root
from itemsage_core.storage.store import Store

FILES_KEY = "files"  # the manifest's folder of the listed files, relative to the model URI
KEPT_VERSIONS = 2


def publish_checkpoint(staging: Path, out: str, names: tuple[str, ...], manifest_name: str):
    """Upload the checkpoint written in `staging` to the URI `out`: its files first, under
    files/<model_version>/, then its manifest (the switch); then drop old versions' files."""
    store = Store(out)
    existing = store.names("")
    if existing and manifest_name not in existing:
        raise ItemSageError(f"{out} exists and is not a model checkpoint; choose another --out")
    manifest = json.loads((staging / manifest_name).read_text())
    folder = f"{FILES_KEY}/{manifest['model_version']}"
    previous = _manifest(store, manifest_name).get(FILES_KEY) if existing else None
    for name in names:
        store.upload(staging / name, f"{folder}/{name}")
    text = json.dumps({**manifest, FILES_KEY: folder}, indent=2, sort_keys=True) + "\n"
    store.write_bytes(manifest_name, text.encode())
    kept = {folder.rsplit("/", 1)[-1], (previous or "").rsplit("/", 1)[-1]}
    for version in store.names(FILES_KEY):
        if version not in kept:
            store.delete(f"{FILES_KEY}/{version}")


def _manifest(store: Store, manifest_name: str) -> dict:
    try:
        return json.loads(store.read_bytes(manifest_name))
    except FileNotFoundError:
        raise ItemSageError(f"{store.uri} is not a model checkpoint (no {manifest_name})") from None
    except ValueError as exc:
        raise ItemSageError(f"{store.path(manifest_name)} is not valid JSON: {exc}") from None


def fetch_checkpoint(
    uri: str, names: tuple[str, ...], manifest_name: str, verify, cache_dir: Path | None = None
) -> Path:
    """A local copy of the checkpoint at `uri`: the cache's copy of its version when `verify`
    passes it, else a download that `verify` (which raises ItemSageError naming the damaged
    file) checks before it enters the cache."""
    store = Store(uri)
    manifest = _manifest(store, manifest_name)
    version = manifest["model_version"]
    cache = Path(cache_dir or cache_root("checkpoints"))
    target = cache / version
    if (target / manifest_name).is_file():
        try:
            verify(target)
            return target
        except ItemSageError:  # a damaged cached copy is fetched again
            shutil.rmtree(target, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    staging = cache / f".fetch-{uuid.uuid4().hex}"
    try:
        folder = manifest.get(FILES_KEY) or ""
        for name in names:
            try:
                store.download(f"{folder}/{name}" if folder else name, staging / name)
            except FileNotFoundError:
                raise ItemSageError(f"checkpoint {uri} is missing {name}") from None
        local = {k: v for k, v in manifest.items() if k != FILES_KEY}
        (staging / manifest_name).write_text(json.dumps(local, indent=2, sort_keys=True) + "\n")
        try:
            verify(staging)
        except ItemSageError as exc:
            raise ItemSageError(str(exc).replace(str(staging), uri)) from None
        with contextlib.suppress(OSError):  # another process placed it first
            os.replace(staging, target)
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)
