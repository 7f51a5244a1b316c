"""What every index type provides: its `IndexType` (name, files, size per vector, build, load)
and the `Shard` its build and load return: one index over a shard's distinct vectors, labelled
0..n-1 in row order, searched by inner product of unit vectors."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

MIN_EF = 10  # the least ef_search tuning tries: the gate's 10 results
MAX_EF = 1024  # the largest ef_search tuning tries
EF_STEPS = (10, 16, 24, 32, 48, 64, 96, 128, 256, 512, MAX_EF)  # the report's ef_search sweep


@runtime_checkable
class Shard(Protocol):
    """A built or loaded shard of one index type."""

    @property
    def setting(self) -> int:
        """The search setting applied (its type's `setting_name`: ef_search, nprobe)."""

    def tune(self, value: int) -> None:
        """Search with the setting `value` from now on."""

    def setting_range(self) -> tuple[int, int]:
        """The least and most settings tuning tries."""

    def least_setting(self, k: int) -> int:
        """The least setting that can answer k results (a graph's ef: k)."""

    def search(
        self, queries: np.ndarray, k: int, threads: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each query's k nearest labels and their 1 - cosine, best first, in one native call
        for the whole batch (label -1 past the points found)."""

    def vectors_of(self, labels: np.ndarray) -> np.ndarray:
        """The float32 vectors of points, by label."""

    def count(self) -> int:
        """Points held, deleted ones included."""

    def save(self, paths: Mapping[str, Path]) -> None:
        """Write the shard's files: one path per role of its type's `roles`."""


@dataclasses.dataclass(frozen=True)
class IndexType:
    """One index type: the surfaces config's `index` value and a manifest shard's."""

    name: str
    suffix: str  # of its index file
    setting_name: str  # the search setting tuned and published: a manifest `search` key
    least_bytes: Callable[[int, Any], int]  # per vector of dim d under ShardParams: `auto` skips
    # a type whose least size is over the budget without building it
    build: Callable[[np.ndarray, Any, int, int], tuple[Shard, dict | None]]  # (unit vectors,
    # ShardParams, threads, seed) -> (filled shard, what its training used)
    load: Callable[[Path, dict, int], Shard]  # (build directory, manifest entry, dim)
    sweep_steps: tuple[int, ...]  # the settings the report's sweep tries
    roles: tuple[str, ...] = ("index",)  # its files besides the id map
    default_rerank: int | None = None  # quantised types: candidates re-ranked per result
    updatable: bool = False  # an incremental refresh updates its shards in place

    @property
    def quantised(self) -> bool:
        return self.default_rerank is not None
