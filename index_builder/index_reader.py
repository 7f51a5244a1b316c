"""A published build loaded for queries: every shard verified against the manifest, then a
fan-out over the shards (or, with k-means sharding, over the shards of the nearest clusters) and a
merge of their top-k. Scores are cosine similarities (the vectors are unit length)."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from index_builder.batch_search import Hits, Neighbours, shard_hits, top_k
from index_builder.build_files import local_build
from index_builder.index_types.registry import type_of
from index_builder.index_types.shard import Shard
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
from index_builder.resident_memory import measured_load
from index_builder.served_recall import draw, served
from index_builder.shard_build import index_bytes, load_shard, shard_setting
from index_builder.surfaces import SURFACE_NAME
from itemsage_core.errors import ItemSageError
from itemsage_core.storage.store import Store, as_store

Root = str | os.PathLike | Store
LOAD_ERRORS = (ItemSageError, OSError, RuntimeError, ValueError)


@dataclasses.dataclass(frozen=True)
class IdMap:
    """A shard's products grouped by label (several when their vectors are identical)."""

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

    @functools.cached_property
    def points(self) -> int:
        """Live points: labels with products (a refreshed shard's graph also holds deleted ones)."""
        return int(np.count_nonzero(np.diff(self.starts)))


@dataclasses.dataclass
class ShardedIndex:
    """One loaded build of a surface: its shards (index_types.Shard) and id maps, queried by
    fan-out (k-means: to the shards of the nearest clusters) and a merge of their top k."""

    manifest: dict
    directory: Path
    indexes: list[Shard]  # in manifest order
    ids: list[IdMap]  # each shard's id map
    centroids: np.ndarray | None
    resident: list[int | None] | None = None  # per shard, bytes its load added (measured)

    @classmethod
    def load(
        cls,
        root: Root,
        surface: str,
        build_id: str,
        cache_dir: str | Path | None = None,
        measure: bool = False,
        manifest: dict | None = None,
    ) -> ShardedIndex:
        """Load one complete build (from an object store through `cache_dir`); any missing,
        truncated or corrupted file is an error. With `measure`, `resident` holds the bytes
        each shard's load added to the process. `manifest`: the build's, when it has not been
        written yet (the recall gate loads a build before publishing it)."""
        store = as_store(root)
        manifest = manifest or read_build_manifest(store, build_key(surface, build_id))
        dim = manifest["params"]["dim"]
        with local_build(store, manifest, cache_dir) as directory:
            shards = manifest["shards"]
            if measure:
                loaded, resident = zip(
                    *(measured_load(lambda e=e: load_shard(directory, e, dim)) for e in shards)
                )
            else:
                loaded, resident = [load_shard(directory, e, dim) for e in shards], None
            centroids = None
            if manifest.get("centroids"):
                centroids = np.load(directory / CENTROIDS, allow_pickle=False)
        for (shard, _), entry in zip(loaded, manifest["shards"]):
            shard.tune(shard_setting(entry, manifest["params"]))
        return cls(
            manifest,
            directory,
            [i for i, _ in loaded],
            [IdMap.from_table(ids) for _, ids in loaded],
            centroids,
            None if resident is None else list(resident),
        )

    def _routes(self, queries: np.ndarray) -> list[np.ndarray]:
        """Per shard, the rows of `queries` it is searched for: all of them (hash), or those
        whose `probe_clusters` nearest live centroids include its cluster (k-means)."""
        everything = np.arange(len(queries))
        if self.centroids is None:
            return [everything] * len(self.indexes)
        clusters = np.array([entry["cluster"] for entry in self.manifest["shards"]])
        live = np.unique(clusters)
        scores = queries @ self.centroids[live].T
        probes = self.manifest["params"]["probe_clusters"]
        routed = live[np.argsort(-scores, axis=1, kind="stable")[:, :probes]]  # (q, probes)
        return [everything[(routed == cluster).any(axis=1)] for cluster in clusters]

    def unit_queries(self, vectors: np.ndarray) -> np.ndarray:
        """Query vectors as a unit-length float32 matrix; an error naming the first row that is
        of another dimension, zero or not finite."""
        queries = np.asarray(vectors, np.float32)
        queries = queries.reshape(1, -1) if queries.ndim == 1 else queries
        dim = self.manifest["params"]["dim"]
        if queries.ndim != 2 or queries.shape[1] != dim:
            raise ItemSageError(
                f"query vectors have {queries.shape[-1]} dimensions, the index {dim}"
            )
        norms = np.linalg.norm(queries, axis=1)
        bad = np.flatnonzero(~np.isfinite(norms) | (norms == 0))
        if len(bad):
            where = "" if len(queries) == 1 else f" (row {bad[0]})"
            raise ItemSageError(f"query vector is zero or not finite{where}")
        return queries / norms[:, None]

    def search_batch(
        self,
        vectors: np.ndarray,
        k: int = 10,
        exclude: Sequence[str | None] | None = None,
        threads: int = 1,
    ) -> Neighbours:
        """The top `k` (product id, cosine) of each row of `vectors`, best first (`exclude`:
        per row, an id left out of its results, e.g. the query product itself). Every shard
        answers the whole batch in one native call; with `threads` > 1 shards are searched in
        parallel, each with its share of the threads."""
        queries = self.unit_queries(vectors)
        extra = int(exclude is not None)
        tasks = [
            (s, rows)
            for s, rows in enumerate(self._routes(queries))
            if len(rows) and self.ids[s].points
        ]
        shards, params = self.manifest["shards"], self.manifest["params"]
        workers = max(1, min(threads, len(tasks)))

        def search_shard(task) -> Hits:
            s, rows = task
            ids, wanted = self.ids[s], min(k + extra, self.ids[s].points)
            shard = self.indexes[s]
            shard.tune(max(shard_setting(shards[s], params), shard.least_setting(wanted)))
            return shard_hits(
                shard, ids.ids, ids.starts, queries[rows], rows, wanted,
                max(1, threads // workers),
            )  # fmt: skip

        if workers == 1:
            hits = [search_shard(task) for task in tasks]
        else:
            with ThreadPoolExecutor(workers) as pool:
                hits = list(pool.map(search_shard, tasks))
        return top_k(Hits.concat(hits), len(queries), k, exclude)

    def search(
        self, vector: np.ndarray, k: int = 10, exclude: str | None = None
    ) -> list[tuple[str, float]]:
        """The top `k` (product_id, cosine) for one vector, best first (`exclude`: an id left
        out of the results, e.g. the query product itself): a batch of one."""
        vector = np.asarray(vector, np.float32).reshape(1, -1)
        return self.search_batch(vector, k, None if exclude is None else [exclude]).row(0)

    @functools.cached_property
    def _where(self) -> dict[str, tuple[int, int]]:
        """product id -> (shard, label), built on first use."""
        return {
            pid: (s, int(label))
            for s, ids in enumerate(self.ids)
            for pid, label in zip(ids.ids.tolist(), ids.labels.tolist())
        }

    def vectors_of(self, product_ids: Sequence[str]) -> np.ndarray:
        """The indexed vectors of products, in order (an error naming the first one this
        surface does not serve)."""
        try:
            found = [self._where[pid] for pid in product_ids]
        except KeyError as exc:
            raise ItemSageError(
                f"product {exc.args[0]!r} is not in this surface's index "
                f"(build {self.manifest['build_id']})"
            ) from None
        out = np.empty((len(found), self.manifest["params"]["dim"]), np.float32)
        where = np.array(found, np.int64).reshape(-1, 2)
        for s in np.unique(where[:, 0]):
            rows = np.flatnonzero(where[:, 0] == s)
            out[rows] = self.indexes[s].vectors_of(where[rows, 1])
        return out

    def vector_of(self, product_id: str) -> np.ndarray:
        """The indexed vector of a product (an error if this surface does not serve it)."""
        return self.vectors_of([product_id])[0]


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
    here = sorted(  # the surfaces under the root: directories holding builds
        name
        for name, size in store.sizes("").items()
        if size < 0 and SURFACE_NAME.match(name) and build_ids(store, name)
    )
    raise ItemSageError(
        f"no usable build of surface {surface!r} under {store.uri}: "
        + ("; ".join(problems) or "no builds")
        + ("" if surface in here else f"; surfaces here: {', '.join(here) or 'none'}")
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
        raise ItemSageError(
            f"{path}: expected one vector, got shape {vector.shape}; for several query "
            "vectors use --vectors-file"
        )
    return vector.reshape(-1).astype(np.float32)


def verify_current(
    root: Root,
    surface: str,
    samples: int = 20,
    cache_dir: str | Path | None = None,
    seed: int = 0,
) -> dict:
    """Check the surface's CURRENT build as serving will load it (no fallback): every checksum,
    then `samples` products drawn at random (`seed`) over the whole build must each find
    themselves first (or a product of the identical vector: duplicates share one point), and
    its served recall (served_recall, on the gate's sample). Reports each shard's index type,
    search setting and sizes: bytes per vector (manifest) and resident bytes, measured as this
    process loaded it."""
    store = as_store(root)
    current = current_pointer(store, surface).build_id
    if current is None:
        raise ItemSageError(f"{store.path(surface)} has no CURRENT build")
    index = ShardedIndex.load(store, surface, current, cache_dir, measure=True)
    everyone = np.concatenate([ids.ids for ids in index.ids])
    rng = np.random.default_rng(seed)
    picked = everyone[np.sort(rng.choice(len(everyone), min(samples, len(everyone)), False))]
    vectors = index.vectors_of(picked.tolist())
    found = index.search_batch(vectors, k=1).ids[:, 0]
    tops = index.vectors_of([pid if top is None else top for pid, top in zip(picked, found)])
    same = np.einsum("qd,qd->q", tops, vectors) >= np.einsum("qd,qd->q", vectors, vectors) - 1e-6
    misses = [pid for pid, top, ok in zip(picked.tolist(), found, same) if top is None or not ok]
    gate = index.manifest.get("served", {})
    drawn = draw(index, gate.get("queries", 1000), gate.get("seed", 0))
    now = served(index, drawn)[0]
    result = {
        "surface": surface,
        "build_id": current,
        "products": index.manifest["products"],
        "shards": len(index.indexes),
        "table": index.manifest["table"],
        "checked": len(picked),
        "found_themselves": len(picked) - len(misses),
        "served": {
            **now.figures(),
            "min_recall": index.manifest["params"].get("min_recall"),
            "at_publish": gate.get("recall_at_10"),
        },
        "memory": {
            **index.manifest.get("memory", {}),
            "resident_bytes_now": sum(r or 0 for r in index.resident),
        },
        "per_shard": [
            {
                "shard": entry["shard"],
                "index": type_of(entry).name,
                "search": entry.get(
                    "search",
                    {type_of(entry).setting_name: shard_setting(entry, index.manifest["params"])},
                ),
                "bytes_per_vector": index_bytes(entry) / max(1, entry["vectors"]),
                "resident_bytes_built": entry.get("resident_bytes"),
                "resident_bytes_now": resident,
            }
            for entry, resident in zip(index.manifest["shards"], index.resident)
        ],
    }
    if len(misses) > 0.05 * len(picked):
        raise ItemSageError(
            f"build {current} of {surface!r}: {len(misses)} of {len(picked)} "
            f"products do not find themselves (e.g. {misses[:3]})"
        )
    return result
