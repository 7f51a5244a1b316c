"""The index types by name: a surface's `index` and a manifest shard's. The one place type
names are compared; everything else asks for a type here and then asks the type."""

from __future__ import annotations

from index_builder.index_types.hnsw import HNSW
from index_builder.index_types.hnsw_sq8 import HNSW_SQ8
from index_builder.index_types.ivf_pq import IVF_PQ
from index_builder.index_types.shard import IndexType
from itemsage_core.errors import ItemSageError

TYPES = {t.name: t for t in (HNSW, HNSW_SQ8, IVF_PQ)}  # most accurate (and largest) first
DEFAULT = HNSW  # a surface's type when it names none, and a format-1 build's shards'
AUTO = "auto"  # a surface's `index`: the first type that fits max_memory_mb (per shard)
CHOICES = (*TYPES, AUTO)
UPDATABLE = tuple(name for name, t in TYPES.items() if t.updatable)


def index_type(name: str) -> IndexType:
    """The type of this name; an error naming the known ones."""
    try:
        return TYPES[name]
    except KeyError:
        raise ItemSageError(f"unknown index type {name!r} (known: {', '.join(TYPES)})") from None


def type_of(entry: dict) -> IndexType:
    """A manifest shard entry's type (a format-1 entry names none: the default)."""
    return index_type(entry.get("index", DEFAULT.name))


def is_auto(choice: str) -> bool:
    return choice == AUTO


def candidates(choice: str) -> tuple[IndexType, ...]:
    """The types a surface's `index` choice may build, in the order tried."""
    return tuple(TYPES.values()) if is_auto(choice) else (index_type(choice),)


def updatable(choice: str) -> bool:
    """Whether an incremental refresh updates shards of this choice in place."""
    return not is_auto(choice) and index_type(choice).updatable
