"""The options of one index build run (`itemsage build-index`): light to import, so the CLI takes
its option defaults from here."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from index_builder.surfaces import Surface

if TYPE_CHECKING:
    from itemsage_core.contracts.column_mapping import ColumnMapping


@dataclasses.dataclass(frozen=True)
class BuildIndexConfig:
    """What to build from, where to, and which surfaces."""

    table_uri: str  # the embeddings Delta table
    index_root: str  # one directory per surface: a local path or an object-store URI
    surfaces: tuple[Surface, ...]
    catalog: str | None = None  # catalog Parquet whose columns the surface filters use
    mapping: ColumnMapping | None = None  # column mapping of the catalog
    table_version: int | None = None  # the Delta version to build from; None: the latest
    incremental: bool = False  # refresh each surface's current build instead of rebuilding

    def __post_init__(self) -> None:
        object.__setattr__(self, "surfaces", tuple(self.surfaces))
