"""Pairs of random views of products, for the catalog-supervised objective (docs/model.md).

A product's input units are its non-empty text bags, its images and its dense features. The two
views of a product share no unit when it has two or more (`split`): each unit goes to one view or
the other at random, and a view left empty takes one unit from the other. A product with a single
unit shows it in both views. Then each token of each kept bag is dropped with probability
`token_drop` (a bag that would lose every token keeps them all). Splitting makes the model predict
one part of a product from another (the title from the category, the brand from the title), which
is what places products of one kind together; dropping tokens teaches it that no single word
decides.
Everything is vectorised over the batch (NumPy on the CPU, before the batch moves to a device).
"""

from __future__ import annotations

import numpy as np
import torch

from itemsage_core.features.product_features import ProductBatch
from itemsage_core.training.config import ViewConfig


def _split_units(
    present: np.ndarray, rng: np.random.Generator, config: ViewConfig
) -> tuple[np.ndarray, np.ndarray]:
    """The units each of the two views keeps, per product (rule in the module docstring)."""
    if config.split:
        first = present & (rng.random(present.shape) < 0.5)
        second = present & ~first
    else:
        first = present & (rng.random(present.shape) >= config.feature_drop)
        second = present & (rng.random(present.shape) >= config.feature_drop)
    single = present.sum(axis=1) == 1
    first[single], second[single] = present[single], present[single]
    for view, other in ((first, second), (second, first)):
        empty = ~view.any(axis=1) & present.any(axis=1)
        if empty.any():
            rows = np.flatnonzero(empty)
            scores = np.where(present[rows], rng.random((len(rows), present.shape[1])), -1)
            moved = scores.argmax(axis=1)
            view[rows, moved] = True
            if config.split:
                other[rows, moved] = False
    return first, second


def view_pairs(
    batch: ProductBatch,
    pairs: int,
    rng: np.random.Generator,
    config: ViewConfig = ViewConfig(),
    same: np.ndarray | None = None,
) -> ProductBatch:
    """`batch` holds `pairs` products twice (rows [0, pairs) and [pairs, 2 pairs)), then others:
    returns it with each pair made two views; the other rows stay whole. Where `same` is False
    the pair is two different products (a product and its neighbour): their units are not
    split, only their tokens dropped."""
    b, n_features = batch.text_mask.shape
    offsets = batch.bag_offsets.numpy()
    lengths = np.diff(np.append(offsets, len(batch.token_ids)))
    bag_of_token = np.repeat(np.arange(len(lengths)), lengths)

    m = batch.image_mask.shape[1]
    dense = batch.dense_mask.numpy() if batch.dense_mask is not None else np.zeros((b, 0), bool)
    present = np.concatenate([batch.text_mask.numpy(), batch.image_mask.numpy(), dense], axis=1)
    kept = present.copy()
    same = np.ones(pairs, bool) if same is None else same
    first, second = _split_units(present[:pairs][same], rng, config)
    kept[:pairs][same], kept[pairs : 2 * pairs][same] = first, second

    viewed = np.arange(b) < 2 * pairs
    keep = rng.random(len(bag_of_token)) >= config.token_drop
    kept_per_bag = np.bincount(bag_of_token[keep], minlength=len(lengths))
    keep |= (kept_per_bag == 0)[bag_of_token]  # an emptied bag keeps every token
    keep |= ~np.repeat(viewed, n_features)[bag_of_token]
    keep &= kept[:, :n_features].reshape(-1)[bag_of_token]

    new_lengths = np.bincount(bag_of_token[keep], minlength=len(lengths))
    new_offsets = np.concatenate([[0], np.cumsum(new_lengths)[:-1]]).astype(np.int64)
    return ProductBatch(
        images=batch.images,
        image_mask=torch.from_numpy(kept[:, n_features : n_features + m]),
        token_ids=batch.token_ids[torch.from_numpy(keep)],
        bag_offsets=torch.from_numpy(new_offsets),
        text_mask=torch.from_numpy(new_lengths.reshape(b, n_features) > 0),
        dense=batch.dense,
        dense_mask=torch.from_numpy(kept[:, n_features + m :]) if batch.dense else None,
    )
