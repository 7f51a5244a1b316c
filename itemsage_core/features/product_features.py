"""Encoder inputs: a conformed catalog batch turned into image arrays and token-id bags.

`ProductFeatures` holds the inputs of many products compactly (images flat with offsets, text as
TextBags) so that a trainer can gather any subset; `batch` pads a subset into a `ProductBatch` of
tensors, with the images padded only to the largest image count in that subset. Dense features
(pretrained embeddings, itemsage_core/contracts/dense_features.py) are one (n, dim) array each,
zeros where a product lacks the feature, with a presence mask.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from itemsage_core.contracts.arrow_checks import as_array
from itemsage_core.contracts.catalog_contract import IMAGE_EMBEDDINGS, PRODUCT_ID
from itemsage_core.errors import ContractError
from itemsage_core.features.vocabulary import FEATURES, TextBags, Vocabulary


@dataclasses.dataclass
class ProductBatch:
    """Tensors for one forward pass over b products (F text features, up to m images each)."""

    images: torch.Tensor  # (b, m, image_dim) float32
    image_mask: torch.Tensor  # (b, m) bool, True where an image is present
    token_ids: torch.Tensor  # (T,) int64 vocabulary ids, bag after bag
    bag_offsets: torch.Tensor  # (b * F,) int64 start of each (product, feature) bag
    text_mask: torch.Tensor  # (b, F) bool, True where the bag holds a token
    dense: tuple[torch.Tensor, ...] = ()  # per dense feature, (b, dim) float32
    dense_mask: torch.Tensor | None = None  # (b, len(dense)) bool, True where present

    def to(self, device) -> ProductBatch:
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return dataclasses.replace(self, **moved, dense=tuple(t.to(device) for t in self.dense))

    @property
    def size(self) -> int:
        return self.images.shape[0]


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + n) for each (s, n), without a Python loop."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    shift = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return np.arange(total, dtype=np.int64) + shift


@dataclasses.dataclass
class ProductFeatures:
    """Encoder inputs of n products: `product_ids`, flat images with offsets, text bags."""

    product_ids: pa.Array
    image_values: np.ndarray  # (total images, image_dim) float32
    image_offsets: np.ndarray  # (n + 1,) int64
    bags: TextBags
    dense: tuple[np.ndarray, ...] = ()  # per dense feature, (n, dim) float32
    dense_present: np.ndarray | None = None  # (n, len(dense)) bool

    def __len__(self) -> int:
        return len(self.image_offsets) - 1

    def batch(self, indices: np.ndarray | None = None) -> ProductBatch:
        """Tensors for the products at `indices` (all when None), in that order."""
        idx = np.arange(len(self)) if indices is None else np.asarray(indices, np.int64)
        b, F, dim = len(idx), len(FEATURES), self.image_values.shape[1]
        counts = self.image_offsets[idx + 1] - self.image_offsets[idx]
        m = int(counts.max(initial=0))
        images = np.zeros((b, m, dim), np.float32)
        mask = np.arange(m)[None, :] < counts[:, None]
        images[mask] = self.image_values[_ranges(self.image_offsets[idx], counts)]
        first = self.bags.offsets[idx * F]
        lengths = self.bags.offsets[idx * F + F] - first
        ids = self.bags.ids[_ranges(first, lengths)]
        bag_starts = self.bags.offsets[(idx * F)[:, None] + np.arange(F + 1)[None, :]]
        bag_lengths = np.diff(bag_starts, axis=1)
        offsets = np.concatenate([[0], np.cumsum(bag_lengths.reshape(-1))[:-1]])
        return ProductBatch(
            images=torch.from_numpy(images),
            image_mask=torch.from_numpy(mask),
            token_ids=torch.from_numpy(ids),
            bag_offsets=torch.from_numpy(offsets.astype(np.int64)),
            text_mask=torch.from_numpy(bag_lengths > 0),
            dense=tuple(torch.from_numpy(values[idx]) for values in self.dense),
            dense_mask=(
                torch.from_numpy(self.dense_present[idx])
                if self.dense_present is not None
                else None
            ),
        )


def dense_arrays(
    table: pa.Table | pa.RecordBatch, dense: dict[str, int]
) -> tuple[tuple[np.ndarray, ...], np.ndarray | None]:
    """The named dense columns of validated rows as (n, dim) arrays (zeros where null) and their
    (n, len(dense)) presence mask; None for the mask when there are none."""
    if not dense:
        return (), None
    arrays, present = [], []
    for name, dim in dense.items():
        if name not in table.schema.names:
            raise ContractError(
                f"the model reads dense feature '{name}' ({dim}-d), which the catalog lacks: "
                "featurize it (itemsage featurize) and pass the featurized mapping"
            )
        column = as_array(table.column(name))
        valid = column.is_valid().to_numpy(zero_copy_only=False)
        values = np.zeros((len(column), dim), np.float32)
        flat = pc.list_flatten(column).to_numpy(zero_copy_only=False)
        values[valid] = flat.astype(np.float32, copy=False).reshape(-1, dim)
        arrays.append(values)
        present.append(valid)
    return tuple(arrays), np.stack(present, axis=1)


def encode_products(
    table: pa.Table | pa.RecordBatch,
    vocab: Vocabulary,
    image_dim: int,
    dense: dict[str, int] | None = None,
) -> ProductFeatures:
    """Encoder inputs of every row of a conformed, validated catalog batch (`dense`: the dense
    features the model reads, name -> dimension)."""
    dense_values, dense_present = dense_arrays(table, dense or {})
    images = as_array(table.column(IMAGE_EMBEDDINGS))
    counts = pc.fill_null(pc.list_value_length(images), 0).to_numpy(zero_copy_only=False)
    offsets = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    vectors = pc.list_flatten(images)
    values = pc.list_flatten(vectors).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return ProductFeatures(
        product_ids=as_array(table.column(PRODUCT_ID)),
        image_values=values.reshape(-1, image_dim),
        image_offsets=offsets,
        bags=vocab.encode(table),
        dense=dense_values,
        dense_present=dense_present,
    )
