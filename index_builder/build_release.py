"""Finishing a surface's build: its manifest from the shards' entries, the recall gate, then
publish (manifest, checksum, CURRENT) or discard (the build directory is deleted and the current
build stays)."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np

from index_builder.layout import CENTROIDS, FORMAT, switch_current, write_manifest
from index_builder.surfaces import Surface
from itemsage_core.storage.files import sha256_file


def assemble_manifest(
    surface: Surface,
    build_id: str,
    directory: Path,
    entries: list[dict],
    *,
    table_uri: str,
    table_version: int,
    catalog: str | None,
    model_version: str,
    dim: int,
    group_clusters: list[int] | None,
    seconds: dict,
    routing_recall: float | None = None,
) -> dict:
    """The manifest of a build (docs/indexes.md): shards numbered in (group, part) order, each
    with its k-means cluster when the surface is k-means sharded."""
    shards = []
    for number, entry in enumerate(sorted(entries, key=lambda e: (e["group"], e["part"]))):
        cluster = None if group_clusters is None else group_clusters[entry["group"]]
        shards.append(
            {"shard": number, **entry, **({} if cluster is None else {"cluster": cluster})}
        )
    recalls = np.array([e["recall_at_10"] for e in shards])
    counts = np.array([e["count"] for e in shards])
    centroids = directory / CENTROIDS
    return {
        "format": FORMAT,
        "surface": surface.name,
        "build_id": build_id,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "table": {"uri": table_uri, "version": table_version},
        "catalog": catalog,
        "model_version": model_version,
        "filter": surface.filter,
        "params": {**surface.params(), "space": "ip", "dim": dim, "shards": len(shards)},
        "products": int(counts.sum()),
        "shards": shards,
        "centroids": (
            {"path": CENTROIDS, "sha256": sha256_file(centroids)}
            if group_clusters is not None
            else None
        ),
        "recall_at_10": {
            "min": float(recalls.min()),
            "mean": float((recalls * counts).sum() / counts.sum()),
        },
        "routing_recall": routing_recall,
        "seconds": {
            **seconds,
            "add_items_s": float(sum(e["add_items_s"] for e in shards)),
            "max_shard_s": float(max(e["build_s"] for e in shards)),
        },
    }


def release_build(
    index_root: str | Path, surface: Surface, directory: Path, manifest: dict
) -> dict:
    """Publish the build if every shard (and k-means routing) reached `min_recall`, else delete
    it; the result (status `published`, or `failed` with a `reason`)."""
    result = {
        "build_id": manifest["build_id"],
        "products": manifest["products"],
        "shards": len(manifest["shards"]),
        "recall_at_10": manifest["recall_at_10"],
        "routing_recall": manifest["routing_recall"],
        "min_recall": surface.min_recall,
        "seconds": manifest["seconds"],
    }
    low = {
        f"shard {s['shard']}": s["recall_at_10"]
        for s in manifest["shards"]
        if s["recall_at_10"] < surface.min_recall
    }
    routing = manifest["routing_recall"]
    if routing is not None and routing < surface.min_recall:
        low["k-means routing"] = routing
    if low:
        shutil.rmtree(directory)
        below = ", ".join(f"{what} {value:.3f}" for what, value in low.items())
        return {
            **result,
            "status": "failed",
            "below_min_recall": low,
            "reason": f"recall gate: recall@10 below min_recall {surface.min_recall} ({below})",
        }
    write_manifest(directory, manifest)
    deleted = switch_current(index_root, surface.name, manifest["build_id"], surface.keep_builds)
    return {**result, "status": "published", "deleted_builds": deleted}
