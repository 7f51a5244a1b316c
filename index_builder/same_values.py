"""Neighbour filters on catalog values (a surface's `neighbours_exclude_same`): a neighbour that
shares the product's value in any listed column (same brand, same merchant) is left out of its
neighbours. Values travel as 64-bit keys (Spark's xxhash64 of the value); a null value, or a
product the catalog lacks, matches nothing."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pandas as pd
import pyarrow as pa

from itemsage_core.contracts.catalog_contract import PRODUCT_ID


@dataclasses.dataclass(frozen=True)
class SameValues:
    """Each product's key in each filter column: `keys` (products, columns) int64 and `known`
    (False where the value is null)."""

    columns: tuple[str, ...]
    ids: pd.Index
    keys: np.ndarray
    known: np.ndarray

    @classmethod
    def from_table(cls, table: pa.Table) -> SameValues:
        """From product_id and one nullable int64 key column per filter column."""
        columns = tuple(c for c in table.column_names if c != PRODUCT_ID)
        known = np.stack(
            [table.column(c).is_valid().to_numpy(zero_copy_only=False) for c in columns], axis=1
        )
        keys = np.stack([table.column(c).fill_null(0).to_numpy() for c in columns], axis=1)
        ids = pd.Index(table.column(PRODUCT_ID).to_numpy(zero_copy_only=False))
        return cls(columns, ids, keys.astype(np.int64), known)

    @classmethod
    def from_ipc(cls, data: bytes) -> SameValues:
        return cls.from_table(pa.ipc.open_stream(io.BytesIO(data)).read_all())

    def of(self, product_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(keys, known) of `product_ids` (any shape; None or an unknown id: nothing known),
        with one more axis for the columns."""
        flat = np.asarray(product_ids, object).ravel()
        rows = self.ids.get_indexer(flat)
        found = rows >= 0
        keys = np.zeros((len(flat), len(self.columns)), np.int64)
        known = np.zeros((len(flat), len(self.columns)), bool)
        keys[found], known[found] = self.keys[rows[found]], self.known[rows[found]]
        shape = (*np.shape(product_ids), len(self.columns))
        return keys.reshape(shape), known.reshape(shape)

    def shared(self, products: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
        """(queries, n) bool: whether each of `neighbours` (queries, n ids) shares a known value
        with its row's product (`products`, one id per row)."""
        keys, known = self.of(products)
        other, other_known = self.of(neighbours)
        same = (other == keys[:, None, :]) & other_known & known[:, None, :]
        return same.any(axis=2)
