"""Helpers of the index tests: unit vectors, product ids, a build's manifest from its shards, a
build made and released in-process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from index_builder.build_release import assemble_manifest, release_build, release_surface
from index_builder.layout import build_key, current_pointer, new_build_id
from index_builder.partitioning import hash_groups, nearest_centroids
from index_builder.plan import SurfaceFailure, SurfacePlan
from index_builder.shard_build import ShardParams, build_group_shards
from index_builder.surfaces import Surface


def build_dir(root, surface: str, build_id: str) -> Path:
    """A build's directory under a local index root."""
    return Path(root) / build_key(surface, build_id)


def unit_vectors(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def ids(n: int, prefix: str = "P") -> pa.Array:
    return pa.array([f"{prefix}{i:05d}" for i in range(n)])


def manifest_for(
    surface: Surface, build_id: str, entries: list[dict], version: int, dim: int
) -> dict:
    """The manifest of a build of `entries` (shards), as the job assembles it for table
    version `version`."""
    return assemble_manifest(
        surface,
        build_id,
        entries,
        table_uri="t",
        table_version=version,
        catalog=None,
        model_version="m",
        dim=dim,
        group_clusters=None,
        seconds={},
    )


def group_shards(
    product_ids: pa.Array, vectors: np.ndarray, grouping: np.ndarray, groups: int, directory,
    params, size: int,
) -> list[dict]:  # fmt: skip
    """The shards of each of the `groups` (as its build task makes them), written into
    `directory`."""
    entries = []
    for group in range(groups):
        rows = np.flatnonzero(grouping == group)
        entries += build_group_shards(
            product_ids.take(pa.array(rows)), vectors[rows], group, size, directory, params
        )
    return entries


def build_and_release(
    root: Path,
    surface: Surface,
    vectors: np.ndarray,
    product_ids: pa.Array,
    version: int = 0,
    groups: int = 2,
) -> dict:
    """What the Spark job does, in-process: group, build, manifest, gate, publish."""
    build_id = new_build_id(version)
    base = current_pointer(root, surface.name)
    directory = build_dir(root, surface.name, build_id)
    directory.mkdir(parents=True)
    grouping = hash_groups(product_ids, groups)
    params, size = ShardParams.of(surface), surface.target_shard_size
    entries = group_shards(product_ids, vectors, grouping, groups, directory, params, size)
    manifest = manifest_for(surface, build_id, entries, version, vectors.shape[1])
    return release_build(root, surface, manifest, base)


def clustered(n: int, dim: int = 32, centres: int = 40, spread: float = 0.6, seed: int = 0):
    """Unit vectors around `centres` random centres (as embeddings of a catalog's kinds)."""
    rng = np.random.default_rng(seed)
    middle = rng.standard_normal((centres, dim)).astype(np.float32)
    vectors = middle[rng.integers(0, centres, n)] + spread * rng.standard_normal((n, dim)).astype(
        np.float32
    )
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def build_kmeans_and_release(
    root: Path, surface: Surface, vectors: np.ndarray, product_ids: pa.Array, version: int = 0
) -> dict:
    """What the Spark job does for a k-means surface, in-process: centroids (trained on every
    vector), groups, shards, then the release (served gate, publish); its result, or the
    failure's details with its `reason`."""
    plan = SurfacePlan(surface, new_build_id(version), len(vectors), vectors.shape[1], "m", 0)
    plan.train_centroids(vectors)
    nearest = nearest_centroids(vectors, plan.centroids)[:, 0]
    clusters = plan.split_clusters(dict(zip(*np.unique(nearest, return_counts=True))))
    grouping = clusters.group_of(nearest, product_ids)
    build = plan.start_build(str(root), current_pointer(root, surface.name))
    directory = build_dir(root, surface.name, plan.build_id)
    entries = group_shards(
        product_ids, vectors, grouping, plan.groups, directory, build.params, build.max_size
    )
    provenance = {"table_uri": "t", "table_version": version, "catalog": None, "seconds": {}}
    try:
        return release_surface(plan, entries, str(root), provenance, lambda _: None)
    except SurfaceFailure as failure:
        return {**failure.details, "status": "failed", "reason": str(failure)}
