"""Where a surface's index builds live, their manifest, and the atomic switch between builds.

    INDEX_ROOT/<surface>/CURRENT                                  the published build id (one line)
    INDEX_ROOT/<surface>/builds/<build_id>/manifest.json
    INDEX_ROOT/<surface>/builds/<build_id>/manifest.json.sha256   written last: the build is whole
    INDEX_ROOT/<surface>/builds/<build_id>/shard-GGGGG-PP.hnsw     group G, part P (shard_build)
    INDEX_ROOT/<surface>/builds/<build_id>/shard-GGGGG-PP.ids.parquet   product_id, label
    INDEX_ROOT/<surface>/builds/<build_id>/centroids.npy          k-means sharding only

A build is written into its own new directory; CURRENT is replaced by a rename only after the
build passed its recall gate, so readers (who go through CURRENT) never see a partial build.
docs/indexes.md documents the manifest's fields.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from pathlib import Path

from index_builder.surfaces import SURFACE_NAME
from itemsage_core.errors import ItemSageError
from itemsage_core.storage.files import sha256_file, write_atomic

MANIFEST = "manifest.json"
MANIFEST_SUM = "manifest.json.sha256"
CURRENT = "CURRENT"
CENTROIDS = "centroids.npy"
FORMAT = "itemsage-index/1"
SHARD_FIELDS = {"shard", "count", "vectors", "files", "recall_at_10"}
BUILD_ID = re.compile(r"^\d{8}T\d{12}Z-v\d+$")


def surface_dir(root: str | Path, surface: str) -> Path:
    """The surface's directory under the index root; a name that could leave the root (or is
    not a surface name) is refused."""
    if not SURFACE_NAME.match(surface):
        raise ItemSageError(f"invalid surface name {surface!r}: expected [a-z][a-z0-9_-]*")
    return Path(root) / surface


def build_dir(root: str | Path, surface: str, build_id: str) -> Path:
    if not BUILD_ID.match(build_id):
        raise ItemSageError(f"invalid build id {build_id!r}")
    return surface_dir(root, surface) / "builds" / build_id


def new_build_id(table_version: int, now: dt.datetime | None = None) -> str:
    """Sortable by time: `20261125T001500123456Z-v7` (UTC, then the table version)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"{now:%Y%m%dT%H%M%S%f}Z-v{table_version}"


def write_build_manifest(directory: Path, manifest: dict) -> None:
    """Write the manifest, then its checksum: the marker of a complete build."""
    write_atomic(directory / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    write_atomic(directory / MANIFEST_SUM, sha256_file(directory / MANIFEST) + "\n")


def read_build_manifest(directory: Path) -> dict:
    """The manifest of a complete build, checked against its checksum."""
    manifest, checksum = directory / MANIFEST, directory / MANIFEST_SUM
    if not manifest.is_file() or not checksum.is_file():
        raise ItemSageError(
            f"{directory} is not a complete build (no {MANIFEST} or {MANIFEST_SUM})"
        )
    if sha256_file(manifest) != checksum.read_text().strip():
        raise ItemSageError(f"{manifest} does not match its checksum ({MANIFEST_SUM})")
    parsed = json.loads(manifest.read_text())
    if parsed.get("format") != FORMAT:
        raise ItemSageError(f"{manifest}: format {parsed.get('format')!r}, expected {FORMAT}")
    missing = sorted({"surface", "build_id", "table", "params", "products", "shards"} - set(parsed))
    missing += sorted(
        {
            f"shards[].{key}"
            for shard in parsed.get("shards", [])
            for key in SHARD_FIELDS - set(shard)
        }
    )
    if missing:
        raise ItemSageError(f"{manifest} lacks {', '.join(missing)} (written by another version?)")
    return parsed


def current_build_id(root: str | Path, surface: str) -> str | None:
    pointer = surface_dir(root, surface) / CURRENT
    return pointer.read_text().strip() if pointer.is_file() else None


def build_ids(root: str | Path, surface: str) -> list[str]:
    """Every build directory of the surface (complete or not), newest first."""
    builds = surface_dir(root, surface) / "builds"
    if not builds.is_dir():
        return []
    return sorted((p.name for p in builds.iterdir() if BUILD_ID.match(p.name)), reverse=True)


def switch_current(root: str | Path, surface: str, build_id: str, keep: int) -> list[str]:
    """Point CURRENT at a complete build (atomic rename), then delete all but the newest `keep`
    complete builds and any incomplete build older than it; returns the deleted build ids."""
    read_build_manifest(build_dir(root, surface, build_id))
    write_atomic(surface_dir(root, surface) / CURRENT, build_id + "\n")
    deleted, kept = [], 0
    for other in build_ids(root, surface):
        if other == build_id or other > build_id:
            kept += other == build_id
            continue
        complete = (build_dir(root, surface, other) / MANIFEST_SUM).is_file()
        if complete and kept < keep:
            kept += 1
            continue
        shutil.rmtree(build_dir(root, surface, other), ignore_errors=True)
        deleted.append(other)
    return deleted
