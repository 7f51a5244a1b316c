"""The query recipe: one product's (or vector's) nearest neighbours in a surface's current
build, described from the catalog when asked, or a batch of queries answered in one pass."""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable

import pyarrow as pa

from index_builder.index_reader import ShardedIndex
from itemsage_core.errors import ItemSageError, OptionError
from itemsage_runs import preflight
from itemsage_runs.defaults import default


@dataclasses.dataclass(frozen=True)
class QueryRequest:
    """One `itemsage query`: exactly one of `product_id`, `vector_file` (one query) or
    `ids_file`, `vectors_file` (a batch, written to `out`: Parquet or JSON lines)."""

    index_root: str
    surface: str
    product_id: str | None = None
    vector_file: str | None = None
    k: int = default(ShardedIndex.search, "k")
    catalog: str | None = None  # one query: describe the products from it
    mapping: str | None = None
    show: str = "title"  # the catalog columns described, comma-separated
    as_json: bool = False  # one query: the answer is printed as JSON
    ids_file: str | None = None
    vectors_file: str | None = None
    out: str | None = None  # a batch's file (None: JSON lines on stdout)
    threads: int = os.cpu_count() or 1
    cache_dir: str | None = None
    strict: bool = False  # --ids-file: an id the surface does not serve fails the batch

    @property
    def batch(self) -> str | None:
        return self.ids_file or self.vectors_file

    def check(self) -> None:
        """An OptionError for options that do not go together."""
        given = [self.product_id, self.vector_file, self.ids_file, self.vectors_file]
        if sum(bool(v) for v in given) != 1:
            raise OptionError(
                "give exactly one of --product-id, --vector-file, --ids-file and --vectors-file"
            )
        if self.batch and (self.catalog or self.as_json):
            raise OptionError("--catalog and --json go with one query; a batch writes --out")
        if self.out and not self.batch:
            raise OptionError("--out goes with --ids-file or --vectors-file")
        if self.mapping and not self.catalog:
            raise OptionError("--mapping goes with --catalog")
        if self.strict and not self.ids_file:
            raise OptionError("--strict goes with --ids-file")

    def columns(self) -> list[str]:
        """The --show columns, with a catalog to read them from."""
        return [c.strip() for c in self.show.split(",") if c.strip()] if self.catalog else []


@dataclasses.dataclass(frozen=True)
class Answer:
    """A query's answer: the build that answered (its manifest), and either the neighbours of
    one query (best first, with each product's `described` catalog columns) or a batch's rows
    (query, neighbours, error)."""

    manifest: dict
    results: list[tuple[str, float]] = dataclasses.field(default_factory=list)
    described: dict[str, dict] = dataclasses.field(default_factory=dict)
    batch: pa.Table | None = None


def query(request: QueryRequest, warn: Callable[[str], None] | None = None) -> Answer:
    """Answer `request` from the surface's current build (the newest usable one, with a
    `warn`ing, when it is damaged; default: on stderr). A batch with `out` is written there;
    ids the surface does not serve are `warn`ed about and answered with an error row (with
    `strict`: the batch fails)."""
    from index_builder.index_reader import load_published

    warn = warn or _to_stderr
    request.check()
    # a wrong catalog or mapping fails before the index loads
    column_mapping = preflight.catalog_mapping(request.catalog, request.mapping)
    index = load_published(
        request.index_root, request.surface, warn=warn, cache_dir=request.cache_dir
    )
    if request.batch:
        return Answer(index.manifest, batch=_batch(index, request, warn))
    if request.product_id:
        vector = index.vector_of(request.product_id)
    else:
        from index_builder.index_reader import read_vector

        vector = read_vector(request.vector_file)
    results = index.search(vector, request.k, exclude=request.product_id)
    described = {}
    if request.catalog:
        from itemsage_core.contracts.catalog_lookup import describe_products

        wanted = [pid for pid, _ in results] + ([request.product_id] if request.product_id else [])
        described = describe_products(request.catalog, column_mapping, wanted, request.columns())
    return Answer(index.manifest, results, described)


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr)


def _batch(index: ShardedIndex, request: QueryRequest, warn: Callable[[str], None]) -> pa.Table:
    """Every query of the batch file answered: (query, neighbours, error) rows, written to
    `out`. Ids the surface does not serve get no neighbours and an `error` (and a warning);
    an error when none is served, or with `strict` when any is not."""
    from index_builder.batch_io import (
        neighbours_table,
        read_ids,
        read_vectors,
        unserved,
        write_neighbours,
    )

    errors = None
    if request.ids_file:
        names = asked = read_ids(request.ids_file)
        missing = [] if request.strict else unserved(index, names)
        if missing:
            _unserved(index, request.surface, names, missing, warn)
            errors = [None] * len(names)
            for row in missing:
                errors[row] = f"not in this surface's index (build {index.manifest['build_id']})"
            asked = [name for name, error in zip(names, errors) if error is None]
        found = index.search_batch(index.vectors_of(asked), request.k, asked, request.threads)
    else:
        names, vectors = read_vectors(request.vectors_file)
        found = index.search_batch(vectors, request.k, None, request.threads)
    table = neighbours_table(names, found, errors)
    if request.out:
        write_neighbours(table, request.out)
    return table


def _unserved(
    index: ShardedIndex,
    surface: str,
    names: list[str],
    missing: list[int],
    warn: Callable[[str], None],
    shown: int = 10,
) -> None:
    """A warning naming the ids (rows `missing` of `names`) the surface does not serve, the
    first `shown` of them; an error when that is every one."""
    unknown = list(dict.fromkeys(str(names[i]) for i in missing))
    listed = ", ".join(unknown[:shown]) + (", ..." if len(unknown) > shown else "")
    where = f"surface {surface!r} (build {index.manifest['build_id']})"
    if len(missing) == len(names):
        which = "the one id is not" if len(names) == 1 else f"none of the {len(names)} ids are"
        raise ItemSageError(f"{which} in {where}, nothing answered: {listed}")
    warn(f"warning: {len(missing)} of {len(names)} ids are not in {where}: {listed}")
