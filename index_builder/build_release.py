"""Finishing a surface's build: its manifest from the shards' entries, the recall gate, then
publish (manifest, checksum, CURRENT) or discard (the build directory is deleted and the current
build stays). release_surface does all of it for a planned surface."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import numpy as np

from index_builder.build_files import manifest_files
from index_builder.index_reader import LOAD_ERRORS
from index_builder.index_types.registry import type_of
from index_builder.layout import (
    FORMAT,
    Pointer,
    PublishConflict,
    build_key,
    retain,
    switch_current,
    write_build_manifest,
)
from index_builder.plan import SurfaceFailure, SurfacePlan
from index_builder.served_gate import served_manifest, served_text, weakest
from index_builder.shard_build import index_bytes
from index_builder.surfaces import Surface
from itemsage_core.storage.store import Store, as_store


def numbered_shards(entries: list[dict], group_clusters: list[int] | None) -> list[dict]:
    """The shards' entries numbered in (group, part) order, each with its k-means cluster when
    the surface is k-means sharded."""
    shards = []
    for number, entry in enumerate(sorted(entries, key=lambda e: (e["group"], e["part"]))):
        cluster = None if group_clusters is None else group_clusters[entry["group"]]
        shards.append(
            {"shard": number, **entry, **({} if cluster is None else {"cluster": cluster})}
        )
    return shards


def assemble_manifest(
    surface: Surface,
    build_id: str,
    entries: list[dict],
    *,
    table_uri: str,
    table_version: int,
    catalog: str | None,
    model_version: str,
    dim: int,
    group_clusters: list[int] | None,
    seconds: dict,
    centroids: dict | None = None,
    content_keys: bool = False,
) -> dict:
    """The manifest of a build (docs/indexes.md) from its shards' entries (`content_keys`:
    whether their id maps hold them, which an incremental refresh needs)."""
    shards = numbered_shards(entries, group_clusters)
    recalls = np.array([e["recall_at_10"] for e in shards])
    counts = np.array([e["count"] for e in shards])
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
        "config": surface.params(),  # the surface's keys as configured (`params` as built)
        "products": int(counts.sum()),
        "content_keys": content_keys,
        "shards": shards,
        "centroids": centroids,
        "recall_at_10": {
            "min": float(recalls.min()),
            "mean": float((recalls * counts).sum() / counts.sum()),
        },
        "routing_recall": None,  # k-means: set as served (served_gate)
        "memory": memory_of(shards),
        "seconds": {
            **seconds,
            "add_items_s": float(sum(e["add_items_s"] for e in shards)),
            "max_shard_s": float(max(e["build_s"] for e in shards)),
        },
    }


def memory_of(shards: list[dict]) -> dict:
    """A build's index types and sizes: bytes of index files, per indexed vector, and resident
    bytes as measured when each shard was loaded back after its build (None where unknown)."""
    total = sum(index_bytes(s) for s in shards)
    resident = [s.get("resident_bytes") for s in shards]
    return {
        "types": sorted({type_of(s).name for s in shards}),
        "index_bytes": total,
        "bytes_per_vector": total / max(1, sum(s["vectors"] for s in shards)),
        "resident_bytes": None if None in resident else sum(resident),
    }


def missing_files(store: Store, key: str, manifest: dict) -> list[str]:
    """The files the manifest lists that the build directory lacks (or holds at another size)."""
    present = store.sizes(key)

    def arrived(described: dict) -> bool:
        size = present.get(described["path"])
        return size is not None and size == described.get("bytes", size)

    return [d["path"] for _, d in manifest_files(manifest) if not arrived(d)]


def release_build(
    index_root: str | Store,
    surface: Surface,
    manifest: dict,
    base: Pointer,
    progress: Callable[[str], None] = lambda line: None,
) -> dict:
    """Publish the build over `base` (CURRENT when it started) if every file arrived and, as
    loaded here and served (served_gate: its "auto" settings tuned first), its recall@10 meets
    `min_recall`, else delete it; the result (status `published`, or `failed` with a
    `reason`)."""
    store = as_store(index_root)
    key = build_key(surface.name, manifest["build_id"])
    missing = missing_files(store, key, manifest)
    reason = None
    if missing:
        reason = f"{len(missing)} files never arrived in {store.path(key)} (e.g. {missing[0]})"
    else:
        queries = min(surface.served_queries, manifest["products"])
        progress(f"{surface.name}: measuring served recall@10 on {queries} of its products")
        try:
            manifest = served_manifest(store, surface, manifest)
        except LOAD_ERRORS as exc:
            reason = f"the build does not load: {exc}"
    result = {
        "build_id": manifest["build_id"],
        "products": manifest["products"],
        "shards": len(manifest["shards"]),
        "served": manifest.get("served"),
        "recall_at_10": manifest["recall_at_10"],
        "routing_recall": manifest["routing_recall"],
        "min_recall": surface.min_recall,
        "seconds": manifest["seconds"],
    }
    budget = surface.max_memory_mb
    over = [s for s in manifest["shards"] if budget and s.get("index_bytes", 0) > budget * 2**20]
    if reason is None and manifest["served"]["recall_at_10"] < surface.min_recall:
        served = manifest["served"]
        reason = (
            f"recall gate: {served_text(served)} is below min_recall {surface.min_recall}; "
            f"weakest: {weakest(surface, manifest)}"
        )
        result["below_min_recall"] = {"served": served["recall_at_10"]}
    elif reason is None and over:
        reason = (
            f"max_memory_mb {budget}: shard {over[0]['shard']}'s {over[0]['index']} index "
            f"takes {over[0]['index_bytes'] / 2**20:.1f} MB ({len(over)} shards over)"
        )
    if reason is None:
        write_build_manifest(store, key, manifest)
        try:
            switch_current(store, surface.name, manifest["build_id"], base)
        except PublishConflict as exc:
            if exc.created:  # a pointer names the build: it stays (retention removes it later)
                return {**result, "status": "failed", "reason": str(exc)}
            reason = str(exc)
        else:
            return {**result, "status": "published", **_retained(store, surface, manifest)}
    store.delete(key)
    return {**result, "status": "failed", "reason": reason}


def _retained(store: Store, surface: Surface, manifest: dict) -> dict:
    """Retention after a publish: the deleted builds, or a warning (the publish stands)."""
    try:
        deleted = retain(store, surface.name, manifest["build_id"], surface.keep_builds)
    except OSError as exc:
        return {"deleted_builds": [], "warning": f"old builds not deleted: {exc}"}
    return {"deleted_builds": deleted}


def release_surface(
    plan: SurfacePlan,
    entries: list[dict],
    index_root: str,
    provenance: dict,
    progress: Callable[[str], None],
) -> dict:
    """The plan's manifest from its shards' entries (and the run's `provenance`), released past
    the recall gate: the release result, or SurfaceFailure with the build deleted."""
    manifest = assemble_manifest(
        plan.surface,
        plan.build_id,
        entries,
        model_version=plan.model_version,
        dim=plan.dim,
        group_clusters=plan.group_clusters,
        centroids=plan.centroids_file,
        content_keys=True,  # jobs.build_indexes.eligible_rows gives every row its key
        **provenance,
    )
    if manifest["products"] != plan.products:
        Store(index_root).delete(build_key(plan.surface.name, plan.build_id))
        raise SurfaceFailure(
            f"shards hold {manifest['products']} products, {plan.products} were eligible"
        )
    try:
        result = release_build(index_root, plan.surface, manifest, plan.base, progress)
    except OSError as exc:  # the store failed: what was written stays for retention to remove
        raise SurfaceFailure(f"publishing into {index_root} failed: {exc}") from None
    if result["status"] != "published":
        raise SurfaceFailure(result["reason"], result)
    progress(
        f"{plan.surface.name}: published build {plan.build_id}: {plan.products} products in "
        f"{result['shards']} shards, {served_text(result['served'])}"
    )
    return result
