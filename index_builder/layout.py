"""Where a surface's index builds live, their manifest, and the switch between builds, on any
filesystem (a local path or an object store: itemsage_core.storage.store):

    INDEX_ROOT/<surface>/CURRENT-NNNNNNNNNN           one per publish or rollback (JSON): the
                                                      highest-numbered names the current build
    INDEX_ROOT/<surface>/builds/<build_id>/manifest.json
    INDEX_ROOT/<surface>/builds/<build_id>/manifest.json.sha256   written last: the build is whole
    INDEX_ROOT/<surface>/builds/<build_id>/aT-shard-GGGGG-PP.hnsw  group G, part P (shard_build),
                                                                 uploaded by task attempt T
    INDEX_ROOT/<surface>/builds/<build_id>/aT-shard-GGGGG-PP.ids.parquet   product_id, label
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
LEGACY_CURRENT = "CURRENT"  # the one-line pointer of roots published before CURRENT-N (seq 0)
POINTER = re.compile(r"^CURRENT-(\d{10})$")
POINTERS_KEPT = 100  # pointer history kept per surface (newest first)
CENTROIDS = "centroids.npy"
FORMAT = "itemsage-index/2"  # 2: per-shard index type, search setting and sizes
READABLE_FORMATS = ("itemsage-index/1", FORMAT)
SHARD_FIELDS = {"shard", "count", "vectors", "files", "recall_at_10"}
BUILD_ID = re.compile(r"^\d{8}T\d{12}Z-v\d+$")
FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # a file directly in its build directory


class PublishConflict(ItemSageError):
    """CURRENT moved (another publisher, or a rollback) after this build started; `created`:
    whether this publisher's pointer exists all the same (its build must then stay)."""

    def __init__(self, message: str, created: bool):
        super().__init__(message)
        self.created = created


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
    if parsed.get("format") not in READABLE_FORMATS:
        raise ItemSageError(
            f"{where}/{MANIFEST}: format {parsed.get('format')!r}, expected one of "
            f"{', '.join(READABLE_FORMATS)}"
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
    surface, _, build_id = key.split("/")
    if (parsed["surface"], parsed["build_id"]) != (surface, build_id):
        raise ItemSageError(
            f"{where}/{MANIFEST} describes build {parsed['build_id']} of {parsed['surface']!r}"
        )
    paths = [f["path"] for shard in parsed["shards"] for f in shard["files"].values()]
    paths += [parsed["centroids"]["path"]] if parsed.get("centroids") else []
    if not all(isinstance(p, str) and FILE_NAME.match(p) for p in paths):
        raise ItemSageError(f"{where}/{MANIFEST} names a file outside its build directory")
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


def switch_current(store: Store, surface: str, build_id: str, base: Pointer) -> None:
    """Point CURRENT at a complete build by creating the pointer after `base` (CURRENT when the
    build or rollback started); PublishConflict when CURRENT has moved since."""
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
    failure = None
    try:
        store.create(f"{surface}/{pointer_name(seq)}", body)
    except OSError as exc:  # the outcome is unknown (e.g. a retried request): read back
        failure = exc
    if not _won(store, surface, seq, body, build_id):
        if failure is not None:
            raise failure
        now = current_pointer(store, surface)
        raise PublishConflict(
            f"surface {surface!r}: CURRENT moved while build {build_id} was being published (it "
            f"started from {base.build_id or 'no build'}, now {now.build_id} is current, pointer "
            f"{pointer_name(now.seq)}): another build-index or rollback-index ran at the same "
            "time; nothing was published, rerun to start from the new state",
            created=_read(store, f"{surface}/{pointer_name(seq)}") == body,
        )


def _read(store: Store, key: str) -> bytes | None:
    try:
        return store.read_bytes(key)
    except FileNotFoundError:
        return None


def _won(store: Store, surface: str, seq: int, body: bytes, build_id: str) -> bool:
    """Whether pointer `seq` is this publisher's (`body`: read back, since a store without
    atomic create-if-absent may let a racer replace it) and the pointers after it, if any,
    descend from it."""
    if _read(store, f"{surface}/{pointer_name(seq)}") != body:
        return False
    seqs, _ = _pointers(store, surface)
    if seqs[-1] == seq:
        return True
    following = _read(store, f"{surface}/{pointer_name(seq + 1)}")
    return following is not None and json.loads(following)["previous"] == build_id


def retain(store: Store, surface: str, build_id: str, keep: int) -> list[str]:
    """After `build_id` was published: delete all but the newest `keep` complete builds,
    incomplete builds older than it (killed runs), the legacy CURRENT and pointers beyond
    POINTERS_KEPT; never the build CURRENT names at the moment of deleting (a rollback may have
    just published an old one). Returns the deleted build ids."""
    deleted, kept = [], 0
    for other in build_ids(store, surface):
        if other >= build_id:
            kept += other == build_id
            continue
        if kept < keep and is_complete(store, surface, other):
            kept += 1
            continue
        if current_pointer(store, surface).build_id == other:
            continue
        store.delete(build_key(surface, other))
        deleted.append(other)
    seqs, legacy = _pointers(store, surface)
    for seq in seqs[:-POINTERS_KEPT]:
        store.delete(f"{surface}/{pointer_name(seq)}")
    if legacy and seqs:
        store.delete(f"{surface}/{LEGACY_CURRENT}")
    return deleted
