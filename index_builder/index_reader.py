"""A published build loaded for queries: every shard verified against the manifest, then a
fan-out over the shards (or, with k-means sharding, over the shards of the nearest clusters) and a
merge of their top-k. Scores are cosine similarities (the vectors are unit length)."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from index_builder.build_files import local_build
from index_builder.layout import (
    CENTROIDS,
    Pointer,
    build_ids,
    build_key,
    current_pointer,
    is_complete,
    read_build_manifest,
    retain,
    switch_current,
)
from index_builder.shard_build import load_shard
from itemsage_core.errors import ItemSageError
from itemsage_core.storage.store import Store, as_store

Root = str | os.PathLike | Store
LOAD_ERRORS = (ItemSageError, OSError, RuntimeError, ValueError)


@dataclasses.dataclass(frozen=True)
class IdMap:
    """A shard's products grouped by hnswlib label (several when their vectors are identical)."""

    ids: np.ndarray  # product ids, sorted by label
    labels: np.ndarray  # the label of each, ascending
    starts: np.ndarray  # label l's products are ids[starts[l]:starts[l + 1]]

    @classmethod
    def from_table(cls, table) -> IdMap:
        labels = table.column("label").to_numpy()
        order = np.argsort(labels, kind="stable")
        labels = labels[order]
        starts = np.searchsorted(labels, np.arange(labels[-1] + 2 if len(labels) else 1))
        return cls(table.column("product_id").to_numpy(zero_copy_only=False)[order], labels, starts)

    def products(self, label: int) -> list[str]:
        return self.ids[self.starts[label] : self.starts[label + 1]].tolist()

    @property
    def points(self) -> int:
        """Live points: labels with products (a refreshed shard's graph also holds deleted ones)."""
        return int(np.count_nonzero(np.diff(self.starts)))


@dataclasses.dataclass
class ShardedIndex:
    """One loaded build of a surface: its shards' hnswlib indexes and id maps, queried by
    fan-out (k-means: to the shards of the nearest clusters) and a merge of their top k."""

    manifest: dict
    directory: Path
    indexes: list  # hnswlib indexes, in manifest order
    ids: list[IdMap]  # each shard's id map
    centroids: np.ndarray | None

    @classmethod
    def load(
        cls, root: Root, surface: str, build_id: str, cache_dir: str | Path | None = None
    ) -> ShardedIndex:
        """Load one complete build (from an object store through `cache_dir`); any missing,
        truncated or corrupted file is an error."""
        store = as_store(root)
        manifest = read_build_manifest(store, build_key(surface, build_id))
        dim = manifest["params"]["dim"]
        with local_build(store, manifest, cache_dir) as directory:
            loaded = [load_shard(directory, entry, dim) for entry in manifest["shards"]]
            centroids = None
            if manifest.get("centroids"):
                centroids = np.load(directory / CENTROIDS, allow_pickle=False)
        for index, _ in loaded:
            index.set_ef(manifest["params"]["ef_search"])
        return cls(
            manifest,
            directory,
            [i for i, _ in loaded],
            [IdMap.from_table(ids) for _, ids in loaded],
            centroids,
        )

    def _shards_for(self, vector: np.ndarray) -> list[int]:
        if self.centroids is None:
            return list(range(len(self.indexes)))
        clusters = [entry["cluster"] for entry in self.manifest["shards"]]
        live = sorted(set(clusters))
        scores = self.centroids[live] @ vector
        probes = self.manifest["params"]["probe_clusters"]
        routed = {live[i] for i in np.argsort(-scores, kind="stable")[:probes]}
        return [s for s, cluster in enumerate(clusters) if cluster in routed]

    def search(
        self, vector: np.ndarray, k: int = 10, exclude: str | None = None
    ) -> list[tuple[str, float]]:
        """The top `k` (product_id, cosine) for one vector, best first (`exclude`: an id left
        out of the results, e.g. the query product itself)."""
        vector = np.asarray(vector, np.float32).reshape(-1)
        if vector.shape[0] != self.manifest["params"]["dim"]:
            raise ItemSageError(
                f"query vector has {vector.shape[0]} dimensions, the index "
                f"{self.manifest['params']['dim']}"
            )
        norm = np.linalg.norm(vector)
        if not np.isfinite(norm) or norm == 0:
            raise ItemSageError("query vector is zero or not finite")
        vector = vector / norm
        found: list[tuple[str, float]] = []
        for s in self._shards_for(vector):
            index, ids = self.indexes[s], self.ids[s]
            wanted = min(k + (exclude is not None), ids.points)
            if wanted == 0:
                continue
            index.set_ef(max(self.manifest["params"]["ef_search"], wanted))
            labels, distances = index.knn_query(vector, k=wanted)
            found += [
                (pid, 1.0 - float(d))
                for label, d in zip(labels[0], distances[0])
                for pid in ids.products(int(label))
            ]
        found = [f for f in found if f[0] != exclude]
        return sorted(found, key=lambda f: (-f[1], f[0]))[:k]

    def vector_of(self, product_id: str) -> np.ndarray:
        """The indexed vector of a product (an error if this surface does not serve it)."""
        for index, ids in zip(self.indexes, self.ids):
            where = np.flatnonzero(ids.ids == product_id)
            if len(where):
                return np.asarray(index.get_items([int(ids.labels[where[0]])])[0], np.float32)
        raise ItemSageError(
            f"product {product_id!r} is not in this surface's index "
            f"(build {self.manifest['build_id']})"
        )


def load_published(
    root: Root,
    surface: str,
    warn: Callable[[str], None] = print,
    cache_dir: str | Path | None = None,
) -> ShardedIndex:
    """The surface's current build; if it cannot be loaded, the newest build that can (with a
    warning naming what was wrong). An error when no build is usable."""
    store = as_store(root)
    current = current_pointer(store, surface).build_id
    candidates = ([current] if current else []) + [
        b for b in build_ids(store, surface) if b != current
    ]
    problems = []
    if current is None:
        problems.append(f"{store.path(surface)} has no CURRENT build")
    for build_id in candidates:
        try:
            loaded = ShardedIndex.load(store, surface, build_id, cache_dir)
        except LOAD_ERRORS as exc:
            problems.append(f"build {build_id}: {exc}")
            continue
        if problems:
            warn(
                f"warning: using build {build_id} of surface {surface!r} instead of the "
                f"current one: " + "; ".join(problems)
            )
        return loaded
    raise ItemSageError(
        f"no usable build of surface {surface!r} under {store.uri}: "
        + ("; ".join(problems) or "no builds")
    )


def roll_back(
    root: Root, surface: str, build_id: str | None = None, cache_dir: str | Path | None = None
) -> dict:
    """Point the surface's CURRENT at an earlier build (default: the newest complete build older
    than the current one that loads with every checksum); deletes no complete build."""
    store = as_store(root)
    base: Pointer = current_pointer(store, surface)
    current = base.build_id
    candidates = (
        [build_id]
        if build_id
        else [
            b
            for b in build_ids(store, surface)
            if (current is None or b < current) and is_complete(store, surface, b)
        ]
    )
    problems = []
    for candidate in candidates:
        try:
            ShardedIndex.load(store, surface, candidate, cache_dir)
        except LOAD_ERRORS as exc:
            problems.append(f"build {candidate}: {exc}")
            continue
        switch_current(store, surface, candidate, base)
        retain(store, surface, candidate, keep=len(build_ids(store, surface)))
        return {"surface": surface, "previous": current, "current": candidate, "skipped": problems}
    raise ItemSageError(
        f"surface {surface!r}: no usable build to roll back to from "
        f"{current or 'CURRENT'}"
        + (": " + "; ".join(problems) if problems else " (no complete older build)")
    )


def read_vector(path: str | Path) -> np.ndarray:
    """A query vector from a file: .npy (never pickled objects), else numbers as JSON or text."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            vector = np.load(path, allow_pickle=False)
        else:
            text = path.read_text().strip()
            vector = np.asarray(
                json.loads(text) if text.startswith("[") else text.replace(",", " ").split(),
                dtype=np.float32,
            )
    except (OSError, ValueError) as exc:
        raise ItemSageError(f"cannot read a query vector from {path}: {exc}") from None
    if vector.ndim != 1 and not (vector.ndim == 2 and len(vector) == 1):
        raise ItemSageError(f"{path}: expected one vector, got shape {vector.shape}")
    return vector.reshape(-1).astype(np.float32)


def verify_current(
    root: Root, surface: str, samples: int = 20, cache_dir: str | Path | None = None
) -> dict:
    """Check the surface's CURRENT build as serving will load it (no fallback): every checksum,
    then `samples` products (spread over the shards) must each find their own vector first."""
    store = as_store(root)
    current = current_pointer(store, surface).build_id
    if current is None:
        raise ItemSageError(f"{store.path(surface)} has no CURRENT build")
    index = ShardedIndex.load(store, surface, current, cache_dir)
    picked = [
        ids.ids[i]
        for ids in index.ids
        for i in np.linspace(0, len(ids.ids) - 1, max(1, samples // len(index.ids)), dtype=int)
    ]
    misses = [pid for pid in picked if index.search(index.vector_of(pid), k=1)[0][1] < 1.0 - 1e-4]
    result = {
        "surface": surface,
        "build_id": current,
        "products": index.manifest["products"],
        "shards": len(index.indexes),
        "table": index.manifest["table"],
        "checked": len(picked),
        "found_themselves": len(picked) - len(misses),
    }
    if len(misses) > 0.05 * len(picked):
        raise ItemSageError(
            f"build {current} of {surface!r}: {len(misses)} of {len(picked)} "
            f"products do not find themselves (e.g. {misses[:3]})"
        )
    return result
