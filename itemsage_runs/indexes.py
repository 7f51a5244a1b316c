"""Index recipes: build and publish each surface's index (`build-index`, full or incremental),
and write every product's neighbours in a build to Delta (`neighbours`)."""

from __future__ import annotations

import dataclasses

from index_builder.neighbours import NeighboursConfig
from itemsage_core.errors import OptionError
from itemsage_runs import preflight
from itemsage_runs.defaults import default
from itemsage_runs.spark import Progress, silent, spark_session


@dataclasses.dataclass(frozen=True)
class BuildRequest:
    """One `itemsage build-index`: the table (at a version), the surfaces config (or some of its
    surfaces), the index root, and the catalog whose columns the surface filters use."""

    table_uri: str
    surfaces_path: str
    index_root: str
    catalog: str | None = None
    mapping: str | None = None  # the catalog's column mapping TOML
    table_version: int | None = None  # None: the latest
    only: tuple[str, ...] = ()  # () every surface of the config
    incremental: bool = False
    master: str | None = None
    conf: tuple[str, ...] = ()


def build_index(request: BuildRequest, progress: Progress = silent) -> dict:
    """Build, gate and publish the surfaces; the run summary (a surface that failed says why
    under its name, see `failed_surfaces`)."""
    from index_builder.build_config import BuildIndexConfig
    from index_builder.surfaces import load_surfaces
    from jobs.build_indexes import build_indexes

    surfaces = load_surfaces(request.surfaces_path, request.only)
    preflight.table(request.table_uri, request.table_version)
    preflight.writable(request.index_root, "--out")
    mapping = preflight.catalog_mapping(request.catalog, request.mapping)
    config = BuildIndexConfig(
        request.table_uri,
        request.index_root,
        surfaces,
        request.catalog,
        mapping,
        request.table_version,
        request.incremental,
    )
    spark = spark_session("itemsage-build-index", request.master, request.conf)
    return build_indexes(spark, config, progress=progress)


def failed_surfaces(summary: dict) -> dict[str, str]:
    """The surfaces of a build-index summary that were not published, with the reason."""
    return {n: s["reason"] for n, s in summary["surfaces"].items() if s["status"] == "failed"}


def published_surfaces(summary: dict) -> tuple[str, ...]:
    """The surfaces of a build-index summary that were published."""
    return tuple(n for n, s in summary["surfaces"].items() if s["status"] == "published")


@dataclasses.dataclass(frozen=True)
class NeighboursRequest:
    """One `itemsage neighbours`: the surfaces of an index root (their current builds, or one
    `build_id`), k, the tables' root, and the surfaces config whose neighbours_exclude_same
    filters apply (columns read from `catalog`)."""

    index_root: str
    surfaces: tuple[str, ...]
    out_root: str
    k: int = default(NeighboursConfig, "k")
    build_id: str | None = None
    surfaces_path: str | None = None
    catalog: str | None = None
    mapping: str | None = None
    cache_dir: str | None = None
    master: str | None = None
    conf: tuple[str, ...] = ()


def write_neighbours(request: NeighboursRequest, progress: Progress = silent) -> dict:
    """Every product's top k of each surface into its Delta table; the run summary."""
    from index_builder.surfaces import load_surfaces
    from jobs.neighbours_job import write_neighbours as write_tables

    if request.build_id and len(request.surfaces) > 1:
        raise OptionError("--build goes with one --surface")
    configured = (
        load_surfaces(request.surfaces_path, request.surfaces) if request.surfaces_path else []
    )
    mapping = preflight.catalog_mapping(request.catalog, request.mapping)
    preflight.writable(request.out_root, "--out")
    config = NeighboursConfig(
        request.index_root,
        request.surfaces,
        request.out_root,
        request.k,
        request.build_id,
        request.cache_dir,
        {s.name: s.neighbours_exclude_same for s in configured if s.neighbours_exclude_same},
        request.catalog,
        mapping,
    )
    spark = spark_session("itemsage-neighbours", request.master, request.conf)
    return write_tables(spark, config, progress=progress)
