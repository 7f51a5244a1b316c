"""Planning a surface's build without Spark: its plan from its products' counts (SurfacePlan),
what a build task needs to build one of its groups (GroupBuild), and SurfaceFailure, raised for a
surface that cannot be built (build_run records it; the other surfaces go on)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import tempfile
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from index_builder.layout import CENTROIDS, Pointer, build_key, new_build_id
from index_builder.partitioning import ClusterPlan, train_centroids, unpack_group
from index_builder.shard_build import ShardParams, build_group_shards
from index_builder.surfaces import Surface
from itemsage_core.contracts.catalog_contract import PRODUCT_ID
from itemsage_core.errors import ItemSageError
from itemsage_core.storage.store import Store


class SurfaceFailure(ItemSageError):
    """A surface that cannot be built or published (the others still are): the reason, and the
    details its summary entry keeps beside it."""

    def __init__(self, reason: str, details: dict | None = None):
        super().__init__(reason)
        self.details = details or {}


@dataclasses.dataclass(frozen=True)
class GroupBuild:
    """What a build task needs to build any group of one surface's plan."""

    store: Store  # the index root (pickled as its URI)
    key: str  # the build's directory under it
    params: ShardParams
    max_size: int
    dim: int

    def build(
        self,
        group: int,
        packed: list[tuple[bytes, bytes]],
        threads: int,
        scratch: str | None = None,
        uploaded: Callable[[str], None] = lambda name: None,
        attempt: str = "",
    ) -> list[dict]:
        """The group's shards from its packed parts (partitioning.pack_groups), written into a
        temporary directory under `scratch`, then uploaded into the build directory
        (upload_shards); their manifest entries."""
        products, vectors = unpack_group(packed, self.dim)
        keys = products.column("content_key") if "content_key" in products.column_names else None
        with tempfile.TemporaryDirectory(prefix="itemsage-shards-", dir=scratch) as local:
            entries = build_group_shards(
                products.column(PRODUCT_ID),
                vectors,
                group,
                self.max_size,
                local,
                self.params,
                threads,
                None if keys is None else keys.to_numpy(),
            )
            upload_shards(self.store, local, self.key, entries, attempt, uploaded)
        return entries


def upload_shards(
    store: Store,
    local: str,
    key: str,
    entries: list[dict],
    attempt: str = "",
    uploaded: Callable[[str], None] = lambda name: None,
) -> None:
    """Upload the files of the shard `entries` written in `local` into build directory `key`
    (`uploaded(name)` after each), renaming them in the entries. Files are named after the
    task's `attempt` (a Spark task attempt id, unique in the application), so an earlier attempt
    still running after a retry never overwrites the files whose checksums the manifest
    records."""
    for described in (d for entry in entries for d in entry["files"].values()):
        name = f"a{attempt}-{described['path']}" if attempt else described["path"]
        store.upload(f"{local}/{described['path']}", f"{key}/{name}")
        described["path"] = name
        uploaded(name)


@dataclasses.dataclass
class SurfacePlan:
    """One surface's build as the driver plans it: its products (one model, one dimension) and
    how many groups (build tasks) they go to; k-means: the centroids and each cluster's groups."""

    surface: Surface
    build_id: str
    products: int
    dim: int
    model_version: str
    groups: int  # build tasks: hash buckets; k-means: set by split_clusters
    centroids: np.ndarray | None = None
    clusters: ClusterPlan | None = None
    base: Pointer | None = None  # CURRENT when the build started: it publishes only over this
    centroids_file: dict | None = None  # k-means: the centroids' manifest entry

    @classmethod
    def from_stats(
        cls, surface: Surface, stats: Sequence[Mapping], table_version: int
    ) -> SurfacePlan:
        """The plan of the eligible rows' `stats`, one per model version: `n` rows, embeddings
        of `low` to `high` dimensions. SurfaceFailure unless there are rows, of one model and
        one dimension."""
        if not stats:
            raise SurfaceFailure(
                f"no products after the filter {surface.filter!r}"
                if surface.filter
                else "no products in the table"
            )
        if len(stats) > 1:
            raise SurfaceFailure(
                f"the table mixes model versions "
                f"{sorted(r['model_version'] for r in stats)}; their vectors are not "
                "comparable, re-embed the catalog with one model"
            )
        (row,) = stats
        if row["low"] != row["high"]:
            raise SurfaceFailure(
                f"embeddings of {row['low']} to {row['high']} dimensions in one table"
            )
        return cls(
            surface,
            new_build_id(table_version),
            row["n"],
            row["high"],
            row["model_version"],
            surface.shard_count(row["n"]),
        )

    @property
    def group_clusters(self) -> list[int] | None:
        """K-means: the cluster of each group."""
        return None if self.clusters is None else self.clusters.cluster_of_group()

    def sample_fraction(self) -> float:
        """The share of the products sampled to train the centroids (at most kmeans_sample)."""
        return min(1.0, self.surface.kmeans_sample / self.products)

    def train_centroids(self, sample: np.ndarray) -> np.ndarray:
        """K-means: one centroid per target-size shard of the surface's products."""
        clusters = self.surface.shard_count(self.products)
        self.centroids = train_centroids(sample, clusters, self.surface.seed)
        return self.centroids

    def split_clusters(self, counts: Mapping[int, int]) -> ClusterPlan:
        """Groups from each cluster's product count (an oversized cluster is split over
        several)."""
        surface = self.surface
        self.clusters = ClusterPlan.from_counts(
            counts, len(self.centroids), surface.target_shard_size
        )
        self.groups = self.clusters.groups
        return self.clusters

    def describe(self, sampled: int = 0) -> str:
        """One progress line: the products and their groups (k-means: `sampled` vectors)."""
        name, products = self.surface.name, self.products
        if self.centroids is None:
            return f"{name}: {products} products in {self.groups} hash groups"
        return (
            f"{name}: {products} products in {len(self.centroids)} k-means clusters "
            f"(trained on {sampled} vectors), {self.groups} groups"
        )

    def start_build(self, index_root: str, base: Pointer) -> GroupBuild:
        """Note `base`, the surface's CURRENT when the run started (the build will publish only
        over it); k-means: write the centroids into the new build directory. What its tasks
        need."""
        store = Store(index_root)
        key = build_key(self.surface.name, self.build_id)
        self.base = base
        if self.centroids is not None:
            buffer = io.BytesIO()
            np.save(buffer, self.centroids, allow_pickle=False)
            store.write_bytes(f"{key}/{CENTROIDS}", buffer.getvalue())
            self.centroids_file = {
                "path": CENTROIDS,
                "sha256": hashlib.sha256(buffer.getvalue()).hexdigest(),
            }
        s = self.surface
        return GroupBuild(store, key, ShardParams.of(s), s.target_shard_size, self.dim)
