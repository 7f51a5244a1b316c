"""The surfaces config (TOML): which products each shopping surface serves and how its index is
built. docs/indexes.md documents every key; `conf/surfaces.toml` is the shipped example.

    [defaults]              # optional; any per-surface key
    M = 16
    [surfaces.home]
    filter = "in_stock AND country = 'US'"    # Spark SQL over the table and catalog columns
    target_shard_size = 50000
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
from pathlib import Path

from index_builder.index_types.registry import AUTO, CHOICES, DEFAULT, is_auto
from itemsage_core.errors import ItemSageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SURFACE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
SHARDING_MODES = ("hash", "kmeans")


@dataclasses.dataclass(frozen=True)
class Surface:
    """One surface's eligibility filter, sharding and HNSW parameters."""

    name: str
    filter: str | None = None
    shards: int | None = None  # a fixed shard (or k-means cluster) count ...
    target_shard_size: int = 100_000  # ... or as many as this size needs; never exceeded
    sharding: str = "hash"
    index: str = DEFAULT.name  # a registered type (index_types.registry), or "auto": the
    # first that fits max_memory_mb
    max_memory_mb: float | None = None  # per shard: no shard's index may be larger
    M: int = 16
    ef_construction: int = 200
    ef_search: int | str = AUTO  # or a number; "auto": the cheapest served recall allows
    nprobe: int | str = AUTO  # ivf-pq: IVF lists a query visits, or "auto" as ef_search
    nlist: int | None = None  # ivf-pq: IVF lists per shard (default ~4 sqrt(vectors))
    pq_bytes: int = 64  # ivf-pq: bytes per vector code (sub-quantisers of 8 bits)
    rerank: int | str | None = AUTO  # quantised types: re-rank rerank x k candidates exactly
    # (0: no; None: the type's default_rerank, 4 for hnsw-sq8 and 16 for ivf-pq; "auto" as
    # ef_search)
    train_sample: int = 50_000  # quantiser training vectors per shard (sampled in the task)
    min_recall: float = 0.95  # served recall@10 a build must reach to publish
    served_queries: int = 1000  # the surface's products sampled to measure served recall
    recall_queries: int = 200  # per shard, for the shards' own recall (a diagnostic)
    query_noise: float = 0.1  # norm of the noise added to each gate query
    kmeans_sample: int = 50_000  # vectors the k-means centroids are trained on
    probe_clusters: int | str = AUTO  # clusters a k-means query visits, or "auto"
    keep_builds: int = 3
    seed: int = 0
    max_tombstone_share: float = 0.2  # build-index --incremental: rebuild past this share ...
    max_shard_growth: float = 1.5  # ... or a shard past this many times target_shard_size
    # the neighbours job: a neighbour sharing the product's value in one of these catalog
    # columns (e.g. brand) is left out of its neighbours
    neighbours_exclude_same: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problems = []
        columns = self.neighbours_exclude_same
        if isinstance(columns, (list, tuple)) and all(isinstance(c, str) and c for c in columns):
            object.__setattr__(self, "neighbours_exclude_same", tuple(columns))
        else:
            problems.append("neighbours_exclude_same must be a list of column names")
        if self.index not in CHOICES:
            problems.append(f"index must be one of {', '.join(CHOICES)}")
        if is_auto(self.index) and self.max_memory_mb is None:
            problems.append('index = "auto" needs max_memory_mb (per shard)')
        if self.max_memory_mb is not None and not (
            isinstance(self.max_memory_mb, (int, float)) and self.max_memory_mb > 0
        ):
            problems.append("max_memory_mb must be a positive number")
        for key in ("ef_search", "nprobe", "probe_clusters"):
            value = getattr(self, key)
            whole = isinstance(value, int) and not isinstance(value, bool) and value >= 1
            if value != AUTO and not whole:
                problems.append(f'{key} must be a positive integer or "auto"')
        if self.nlist is not None and (not isinstance(self.nlist, int) or self.nlist < 1):
            problems.append("nlist must be a positive integer")
        rerank = self.rerank
        if rerank not in (None, AUTO) and (not isinstance(rerank, int) or rerank < 0):
            problems.append('rerank must be an integer >= 0 or "auto"')
        if not SURFACE_NAME.match(self.name):
            problems.append("name must match [a-z][a-z0-9_-]* (at most 64 characters)")
        if self.sharding not in SHARDING_MODES:
            problems.append(f"sharding must be one of {', '.join(SHARDING_MODES)}")
        for key in (
            "target_shard_size",
            "M",
            "ef_construction",
            "pq_bytes",
            "train_sample",
            "recall_queries",
            "served_queries",
            "kmeans_sample",
            "keep_builds",
        ):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                problems.append(f"{key} must be a positive integer")
        if self.shards is not None and (not isinstance(self.shards, int) or self.shards < 1):
            problems.append("shards must be a positive integer")
        if not 0.0 <= self.min_recall <= 1.0:
            problems.append("min_recall must be within [0, 1]")
        if not self.query_noise >= 0.0:
            problems.append("query_noise must be >= 0")
        if not 0.0 <= self.max_tombstone_share < 1.0:
            problems.append("max_tombstone_share must be within [0, 1)")
        if not self.max_shard_growth >= 1.0:
            problems.append("max_shard_growth must be >= 1")
        if problems:
            raise ItemSageError(f"surface {self.name!r}: " + "; ".join(problems))

    def shard_count(self, products: int) -> int:
        """Shards (hash) or clusters (kmeans) for `products` eligible products."""
        needed = max(1, math.ceil(products / self.target_shard_size))
        return max(self.shards or 1, needed) if self.sharding == "hash" else (self.shards or needed)

    def params(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "name"}


FIELDS = {f.name for f in dataclasses.fields(Surface)} - {"name"}


def parse_surfaces(config: dict, source: str = "surfaces config") -> dict[str, Surface]:
    """Surfaces from a parsed TOML document; unknown keys and bad values are errors."""
    unknown_top = set(config) - {"defaults", "surfaces"}
    if unknown_top:
        raise ItemSageError(
            f"{source}: unknown top-level keys {sorted(unknown_top)}; "
            "expected [defaults] and [surfaces.NAME] tables"
        )
    defaults = config.get("defaults", {})
    surfaces = config.get("surfaces", {})
    if not surfaces:
        raise ItemSageError(f"{source}: no [surfaces.NAME] table")
    out = {}
    for name, values in surfaces.items():
        merged = {**defaults, **values}
        unknown = set(merged) - FIELDS
        if unknown:
            raise ItemSageError(
                f"{source}: surface {name!r} has unknown keys {sorted(unknown)}; "
                f"known: {', '.join(sorted(FIELDS))}"
            )
        try:
            out[name] = Surface(name=name, **merged)
        except TypeError as exc:
            raise ItemSageError(f"{source}: surface {name!r}: {exc}") from None
    return out


def load_surfaces(path: str | Path, only: list[str] | tuple[str, ...] = ()) -> list[Surface]:
    """The surfaces in a TOML file, or only those named in `only` (each must exist)."""
    try:
        config = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ItemSageError(f"cannot read surfaces config {path}: {exc}") from None
    surfaces = parse_surfaces(config, str(path))
    missing = [name for name in only if name not in surfaces]
    if missing:
        raise ItemSageError(
            f"{path} defines no surface {', '.join(missing)} (it has {', '.join(surfaces)})"
        )
    return [surfaces[name] for name in (only or surfaces)]
