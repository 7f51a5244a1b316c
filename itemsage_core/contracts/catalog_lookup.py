"""A few products' catalog columns (after the mapping), to show beside query results.

Reads only the rows of the asked ids when the mapping takes product_id from one source column
(a Parquet filter on that column), else the whole catalog; then maps and keeps the asked columns.
"""

from __future__ import annotations

import difflib

import pyarrow as pa
import pyarrow.compute as pc

from itemsage_core.contracts.catalog_contract import PRODUCT_ID
from itemsage_core.contracts.column_mapping import ColumnMapping, mapped
from itemsage_core.errors import ItemSageError
from itemsage_core.storage.parquet_io import parquet_dataset


def _id_source(mapping: ColumnMapping | None) -> str | None:
    """The source column product_id is read from, when it is one column as it is."""
    if mapping is None:
        return PRODUCT_ID
    rules = [r for r in mapping.rules if r.target == PRODUCT_ID]
    plain = (
        len(rules) == 1
        and len(rules[0].sources) == 1
        and rules[0].parse is None
        and rules[0].split is None
        and rules[0].join is None
    )
    return rules[0].sources[0] if plain else None


def describe_products(
    catalog: str, mapping: ColumnMapping | None, ids: list[str], columns: list[str]
) -> dict[str, dict]:
    """{product_id: {column: value}} for the `ids` found in the catalog (mapped)."""
    dataset = parquet_dataset(catalog)
    source = _id_source(mapping)
    where = pc.field(source).isin(ids) if source in dataset.schema.names else None
    table = mapped(dataset.to_table(filter=where), mapping)
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        near = {c: difflib.get_close_matches(c, table.column_names, n=1) for c in missing}
        hints = "; ".join(
            f"'{c}' (did you mean '{n[0]}'?)" if n else f"'{c}'" for c, n in near.items()
        )
        raise ItemSageError(
            f"--show: no column {hints} in {catalog}"
            f"{' after the mapping' if mapping else ''}; columns: "
            f"{', '.join(table.column_names)}"
        )
    table = table.filter(pc.is_in(table.column(PRODUCT_ID), value_set=pa.array(ids)))
    rows = table.select([PRODUCT_ID, *columns]).to_pylist()
    return {row.pop(PRODUCT_ID): row for row in rows}
