"""Planning an incremental refresh of a surface's published build, without Spark: whether the
surface must be rebuilt instead (and why), which shard each added product goes to, and the
entries of shards carried over unchanged."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from index_builder.index_types.registry import UPDATABLE, updatable
from index_builder.partitioning import nearest_centroids
from index_builder.surfaces import Surface

# Surface keys that a refresh may change without rebuilding (they shape no shard).
REFRESH_ONLY = ("keep_builds", "max_tombstone_share", "max_shard_growth", "neighbours_exclude_same")


class Rebuild(Exception):
    """The surface is rebuilt from scratch instead: the reason."""


def rebuild_reason(surface: Surface, base: dict) -> str | None:
    """Why the base build cannot be refreshed (None when it can): changed surface parameters,
    or id maps without the content keys a refresh compares."""
    if not base.get("content_keys"):
        return "the current build's id maps hold no content keys (built by an older version)"
    if not updatable(surface.index):
        kinds = ", ".join(UPDATABLE)
        return f"index {surface.index!r} is rebuilt in full (a refresh updates {kinds} shards)"
    defaults = {f.name: f.default for f in dataclasses.fields(Surface)}  # keys added since
    changed = [
        f"{key} {base['config'].get(key, defaults[key])!r} -> {value!r}"
        for key, value in surface.params().items()
        if key not in REFRESH_ONLY and base["config"].get(key, defaults[key]) != value
    ]
    return f"surface parameters changed: {', '.join(changed)}" if changed else None


def overflow_reason(
    surface: Surface, base: dict, removed: Mapping[int, int], added: Mapping[int, int]
) -> str | None:
    """Why the changes (shard -> products `removed`, `added`) are too many for the base build's
    shards (None when they are not): a shard whose tombstones (deleted points not yet reused)
    would pass `max_tombstone_share` of its points, or whose products would pass
    `max_shard_growth` times the target size. Tombstones are counted per product removed, an
    upper bound: a label is deleted only when none of its duplicate products stays."""
    share = surface.max_tombstone_share
    for shard in base["shards"]:
        gone, new = removed.get(shard["shard"], 0), added.get(shard["shard"], 0)
        tombstones = max(0, shard.get("tombstones", 0) + gone - new)
        if tombstones > share * shard["vectors"]:
            return (
                f"shard {shard['shard']} would hold {tombstones} deleted points of "
                f"{shard['vectors']} (max_tombstone_share {share})"
            )
        count = shard["count"] + new - gone
        if count > surface.max_shard_growth * surface.target_shard_size:
            return (
                f"shard {shard['shard']} would hold {count} products (max_shard_growth "
                f"{surface.max_shard_growth} x target_shard_size {surface.target_shard_size})"
            )
    return None


def churn_reason(surface: Surface, base: dict, added: int) -> str | None:
    """Why `added` new or changed products are too many to refresh (None when they are not):
    more than `max_tombstone_share` of the base build's products, where a full build is the
    cheaper way."""
    if added > surface.max_tombstone_share * base["products"]:
        return (
            f"{added} of {base['products']} products are new or changed (more than "
            f"max_tombstone_share {surface.max_tombstone_share}): a full build is cheaper"
        )
    return None


def fill_shards(
    base: dict, removed: Mapping[int, int], added: int, capacity: int
) -> list[tuple[int, int]]:
    """Hash sharding: where a refresh puts its `added` products (a query searches every shard,
    so any shard serves): (shard, products) filling the emptiest shard (after the `removed`)
    up to `capacity` products, then the next, so that a night's additions touch as few shards
    as they can. Rebuild when they do not fit."""
    counts = sorted((s["count"] - removed.get(s["shard"], 0), s["shard"]) for s in base["shards"])
    filled = []
    for count, shard in counts:
        if added <= 0:
            break
        take = min(added, max(0, capacity - count))
        if take:
            filled.append((shard, take))
            added -= take
    if added > 0:
        raise Rebuild(
            f"{added} added products do not fit under target_shard_size {capacity} in the "
            f"{len(counts)} shards: a full build adds shards"
        )
    return filled


@dataclasses.dataclass(frozen=True)
class ClusterRouter:
    """K-means sharding: a refresh adds a product to its nearest live cluster's smallest
    shard, as a query routed to that cluster will search it."""

    centroids: np.ndarray  # the live clusters' centroids, in `clusters` order
    clusters: tuple[int, ...]
    target_of_cluster: dict[int, int]

    @classmethod
    def of(cls, base: dict, centroids: np.ndarray) -> ClusterRouter:
        smallest: dict[int, dict] = {}
        for shard in base["shards"]:
            best = smallest.get(shard["cluster"])
            if best is None or (shard["count"], shard["shard"]) < (best["count"], best["shard"]):
                smallest[shard["cluster"]] = shard
        clusters = tuple(sorted(smallest))
        target = {cluster: shard["shard"] for cluster, shard in smallest.items()}
        return cls(centroids[list(clusters)], clusters, target)

    def shards(self, vectors: np.ndarray) -> np.ndarray:
        """The shard number each vector is added to."""
        nearest = nearest_centroids(vectors, self.centroids)[:, 0]
        return np.array([self.target_of_cluster[self.clusters[i]] for i in nearest], np.int32)


def carried_entry(shard: dict) -> dict:
    """A base shard's entry in the refreshed build, its files unchanged (copied)."""
    return {
        **{k: v for k, v in shard.items() if k not in ("shard", "cluster")},
        "tombstones": shard.get("tombstones", 0),
        "changes": {"added": 0, "removed": 0},
        "carried": True,
        "add_items_s": 0.0,  # nothing built in this run
        "build_s": 0.0,
    }
