"""Where a surface's index builds live, their manifest, and the switch between builds, on any
filesystem (a local path or an object store: itemsage_core.storage.store):

    INDEX_ROOT/<surface>/CURRENT-NNNNNNNNNN           one per publish or rollback (JSON): the
                                                      highest-numbered names the current build
    INDEX_ROOT/<surface>/builds/<build_id>/manifest.json
    INDEX_ROOT/<surface>/builds/<build_id>/manifest.json.sha256   written last: the build is whole
    INDEX_ROOT/<surface>/builds/<build_id>/shard-GGGGG-PP.hnsw     group G, part P (shard_build)
    INDEX_ROOT/<surface>/builds/<build_id>/shard-GGGGG-PP.ids.parquet   product_id, label
    INDEX_ROOT/<surface>/builds/<build_id>/centroids.npy          k-means sharding only

A build is written under its own new build id. Publishing never renames or overwrites: it creates
the pointer numbered one above the pointer the build started from, only if that name is absent
(atomically on local disks, S3, GCS and Azure), so a reader sees the old build or the new, and of
two publishers that started from the same pointer exactly one wins; the other gets
PublishConflict. docs/indexes.md documents the manifest and the guarantees per store.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
import uuid

from index_builder.surfaces import SURFACE_NAME
from itemsage_core.errors import ItemSageError
from itemsage_core.storage.store import Store, as_store

MANIFEST = "manifest.json"
MANIFEST_SUM = "manifest.json.sha256"
LEGACY_CURRENT = "CURRENT"  # the pointer of builds published before format 2 (seq 0)
POINTER = re.compile(r"^CURRENT-(\d{10})$")
POINTERS_KEPT = 100  # pointer history kept per surface (newest first)
CENTROIDS = "centroids.npy"
FORMAT = "itemsage-index/1"
SHARD_FIELDS = {"shard", "count", "vectors", "files", "recall_at_10"}
BUILD_ID = re.compile(r"^\d{8}T\d{12}Z-v\d+$")


class PublishConflict(ItemSageError):
    """CURRENT moved (another publisher, or a rollback) after this build started."""


@dataclasses.dataclass(frozen=True)
class Pointer:
    """A surface's current build: pointer number `seq` (0: the legacy CURRENT, or none)."""

    seq: int
    build_id: str | None


def surface_key(surface: str) -> str:
    """The surface's directory under the index root; a name that could leave the root (or is
    not a surface name) is refused."""
    if not SURFACE_NAME.match(surface):
        raise ItemSageError(f"invalid surface name {surface!r}: expected [a-z][a-z0-9_-]*")
    return surface


def build_key(surface: str, build_id: str) -> str:
    if not BUILD_ID.match(build_id):
        raise ItemSageError(f"invalid build id {build_id!r}")
    return f"{surface_key(surface)}/builds/{build_id}"


def new_build_id(table_version: int, now: dt.datetime | None = None) -> str:
    """Sortable by time: `20261125T001500123456Z-v7` (UTC, then the table version)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"{now:%Y%m%dT%H%M%S%f}Z-v{table_version}"


def write_build_manifest(store: Store, key: str, manifest: dict) -> None:
    """Write the manifest, then its checksum: the marker of a complete build."""
    text = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    store.write_bytes(f"{key}/{MANIFEST}", text)
    store.write_bytes(f"{key}/{MANIFEST_SUM}", (hashlib.sha256(text).hexdigest() + "\n").encode())


def read_build_manifest(store: Store, key: str) -> dict:
    """The manifest of a complete build, checked against its checksum."""
    where = store.path(key)
    try:
        text = store.read_bytes(f"{key}/{MANIFEST}")
        checksum = store.read_bytes(f"{key}/{MANIFEST_SUM}").decode().strip()
    except FileNotFoundError:
        raise ItemSageError(
            f"{where} is not a complete build (no {MANIFEST} or {MANIFEST_SUM})"
        ) from None
    if hashlib.sha256(text).hexdigest() != checksum:
        raise ItemSageError(f"{where}/{MANIFEST} does not match its checksum ({MANIFEST_SUM})")
    parsed = json.loads(text)
    if parsed.get("format") != FORMAT:
        raise ItemSageError(
            f"{where}/{MANIFEST}: format {parsed.get('format')!r}, expected {FORMAT}"
        )
    missing = sorted({"surface", "build_id", "table", "params", "products", "shards"} - set(parsed))
    missing += sorted(
        {
            f"shards[].{key}"
            for shard in parsed.get("shards", [])
            for key in SHARD_FIELDS - set(shard)
        }
    )
    if missing:
        raise ItemSageError(
            f"{where}/{MANIFEST} lacks {', '.join(missing)} (written by another version?)"
        )
    return parsed


def _pointers(store: Store, surface: str) -> tuple[list[int], bool]:
    """The surface's pointer numbers, ascending, and whether a legacy CURRENT exists."""
    names = store.names(surface_key(surface))
    return sorted(int(m[1]) for m in map(POINTER.match, names) if m), LEGACY_CURRENT in names


def pointer_name(seq: int) -> str:
    return f"CURRENT-{seq:010d}"


def current_pointer(root: str | os.PathLike | Store, surface: str) -> Pointer:
    """The highest pointer of the surface (seq 0, build None when nothing was published)."""
    store = as_store(root)
    seqs, legacy = _pointers(store, surface)
    if seqs:
        text = store.read_bytes(f"{surface}/{pointer_name(seqs[-1])}")
        return Pointer(seqs[-1], json.loads(text)["build_id"])
    if legacy:
        return Pointer(0, store.read_bytes(f"{surface}/{LEGACY_CURRENT}").decode().strip())
    return Pointer(0, None)


def current_build_id(root: str | os.PathLike | Store, surface: str) -> str | None:
    return current_pointer(root, surface).build_id


def build_ids(root: str | os.PathLike | Store, surface: str) -> list[str]:
    """Every build of the surface (complete or not), newest first."""
    names = as_store(root).names(f"{surface_key(surface)}/builds")
    return sorted((name for name in names if BUILD_ID.match(name)), reverse=True)


def is_complete(store: Store, surface: str, build_id: str) -> bool:
    return store.exists(f"{build_key(surface, build_id)}/{MANIFEST_SUM}")


def switch_current(
    root: str | os.PathLike | Store, surface: str, build_id: str, base: Pointer, keep: int
) -> list[str]:
    """Point CURRENT at a complete build by creating the pointer after `base` (the pointer the
    build or rollback started from); PublishConflict when CURRENT has moved since. Then delete
    all but the newest `keep` complete builds and any incomplete build older than this one;
    returns the deleted build ids."""
    store = as_store(root)
    read_build_manifest(store, build_key(surface, build_id))
    seq = base.seq + 1
    body = json.dumps(
        {
            "build_id": build_id,
            "previous": base.build_id,
            "seq": seq,
            "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "token": uuid.uuid4().hex,  # tells this publisher's pointer from another's
        }
    ).encode()
    name = f"{surface}/{pointer_name(seq)}"
    created = store.create(name, body)
    # Read back: on a store without atomic create-if-absent, a racer may have replaced it.
    now = current_pointer(store, surface)
    if not created or now.seq != seq or store.read_bytes(name) != body:
        raise PublishConflict(
            f"surface {surface!r}: CURRENT moved while build {build_id} was made (it started "
            f"from {base.build_id or 'no build'}, now {now.build_id} is current, pointer "
            f"{pointer_name(now.seq)}): another build-index or rollback-index ran at the same "
            "time; nothing was published by this run, rerun it to build from the new state"
        )
    return _retain(store, surface, build_id, keep)


def _retain(store: Store, surface: str, build_id: str, keep: int) -> list[str]:
    """Delete all but the newest `keep` complete builds, incomplete builds older than the current
    one (killed runs), the legacy CURRENT and pointers beyond POINTERS_KEPT."""
    deleted, kept = [], 0
    for other in build_ids(store, surface):
        if other >= build_id:
            kept += other == build_id
            continue
        if kept < keep and is_complete(store, surface, other):
            kept += 1
            continue
        store.delete(build_key(surface, other))
        deleted.append(other)
    seqs, legacy = _pointers(store, surface)
    for seq in seqs[:-POINTERS_KEPT]:
        store.delete(f"{surface}/{pointer_name(seq)}")
    if legacy:
        store.delete(f"{surface}/{LEGACY_CURRENT}")
    return deleted
