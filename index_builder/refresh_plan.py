"""Planning an incremental refresh of a surface's published build, without Spark: whether the
surface must be rebuilt instead (and why), which shard each added product goes to, and the new
build's manifest entries (updated shards, and shards carried over unchanged)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import pyarrow as pa

from index_builder.partitioning import hash_groups, nearest_centroids
from index_builder.surfaces import Surface

# Surface keys that a refresh may change without rebuilding (they shape no shard).
REFRESH_ONLY = ("keep_builds", "max_tombstone_share", "max_shard_growth")


class Rebuild(Exception):
    """The surface is rebuilt from scratch instead: the reason."""


def rebuild_reason(surface: Surface, base: dict, model_version: str) -> str | None:
    """Why the base build cannot be refreshed (None when it can): another model, or changed
    surface parameters."""
    if base["model_version"] != model_version:
        return f"the model changed ({base['model_version']} -> {model_version})"
    built = base.get("config", base["params"])  # builds before `config`: their params
    changed = [
        f"{key} {built.get(key)!r} -> {value!r}"
        for key, value in surface.params().items()
        if key not in REFRESH_ONLY and built.get(key) != value
    ]
    return f"surface parameters changed: {', '.join(changed)}" if changed else None


def overflow_reason(
    surface: Surface, base: dict, changes: Mapping[int, tuple[int, int]]
) -> str | None:
    """Why the changes (shard -> (added, removed) products) are too many for the base build's
    shards (None when they are not): a shard whose tombstones (deleted points not yet reused)
    would pass `max_tombstone_share` of its points, or whose products would pass
    `max_shard_growth` times the target size."""
    for shard in base["shards"]:
        added, removed = changes.get(shard["shard"], (0, 0))
        tombstones = max(0, shard.get("tombstones", 0) + removed - added)
        if tombstones > surface.max_tombstone_share * shard["vectors"]:
            return (
                f"shard {shard['shard']} would hold {tombstones} deleted points of "
                f"{shard['vectors']} (max_tombstone_share {surface.max_tombstone_share})"
            )
        count = shard["count"] + added - removed
        if count > surface.max_shard_growth * surface.target_shard_size:
            return (
                f"shard {shard['shard']} would hold {count} products (max_shard_growth "
                f"{surface.max_shard_growth} x target_shard_size {surface.target_shard_size})"
            )
    return None


@dataclasses.dataclass(frozen=True)
class ShardRouter:
    """Where a refresh adds a product: its group (the id hash over the base build's groups, or
    its nearest live k-means centroid), then that group's (cluster's) smallest shard."""

    groups: int
    target_of_group: dict[int, int]  # hash: group -> shard; k-means: cluster -> shard
    centroids: np.ndarray | None  # k-means: the live clusters' centroids, in `clusters` order
    clusters: tuple[int, ...] = ()

    @classmethod
    def of(cls, base: dict, centroids: np.ndarray | None) -> ShardRouter:
        key = "cluster" if centroids is not None else "group"
        smallest: dict[int, dict] = {}
        for shard in base["shards"]:
            best = smallest.get(shard[key])
            if best is None or (shard["count"], shard["shard"]) < (best["count"], best["shard"]):
                smallest[shard[key]] = shard
        target = {group: shard["shard"] for group, shard in smallest.items()}
        groups = 1 + max(shard["group"] for shard in base["shards"])
        if centroids is None:
            return cls(groups, target, None)
        clusters = tuple(sorted(target))
        return cls(groups, target, centroids[list(clusters)], clusters)

    def shards(self, product_ids: pa.Array, vectors: np.ndarray) -> np.ndarray:
        """The shard number each product is added to."""
        if self.centroids is None:
            keys = hash_groups(product_ids, self.groups)
        else:
            keys = np.array(self.clusters)[nearest_centroids(vectors, self.centroids)[:, 0]]
        return np.array([self.target_of_group[int(k)] for k in keys], np.int32)


def carried_entry(shard: dict) -> dict:
    """A base shard's entry in the refreshed build, its files unchanged (copied)."""
    return {
        **{k: v for k, v in shard.items() if k not in ("shard", "cluster")},
        "tombstones": shard.get("tombstones", 0),
        "changes": {"added": 0, "removed": 0},
        "carried": True,
    }
