"""The synthetic shopping world: deterministic, contract-valid, with the structure it promises."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc

from itemsage_core.contracts.catalog_contract import validate_catalog
from itemsage_core.contracts.engagement_contract import validate_engagements
from itemsage_core.synthetic.world import WorldConfig, generate_world


def test_deterministic_for_a_seed(small_world):
    again = generate_world(WorldConfig(products=400, seed=7))
    assert again.catalog.equals(small_world.catalog)
    assert again.engagements.equals(small_world.engagements)
    other = generate_world(WorldConfig(products=400, seed=8))
    assert not other.catalog.equals(small_world.catalog)


def test_world_satisfies_both_contracts(small_world):
    assert validate_catalog(small_world.catalog).report.rejected == 0
    assert validate_engagements(small_world.engagements).report.rejected == 0
    ids = set(small_world.catalog.column("product_id").to_pylist())
    assert set(small_world.engagements.column("product_id").to_pylist()) <= ids


def test_images_per_product():
    world = generate_world(WorldConfig(products=3000, seed=1))
    counts = pc.list_value_length(world.catalog.column("image_embeddings")).to_numpy()
    assert counts.min() == 0 and counts.max() <= 20
    assert 3.5 < counts.mean() < 4.5
    assert (counts == 0).mean() > 0.005  # some products have no image at all


def test_engagements_mix_surfaces_and_conversions_are_sparse():
    world = generate_world(WorldConfig(products=3000, seed=1))
    log = world.engagements
    surfaces = dict(
        zip(*np.unique(log.column("surface").to_numpy(zero_copy_only=False), return_counts=True))
    )
    assert set(surfaces) == {"home", "closeup", "search"}
    kinds = log.column("engagement").to_numpy(zero_copy_only=False)
    assert (kinds == "checkout").mean() < 0.04 and (kinds == "add_to_cart").mean() < 0.1
    assert (kinds == "click").mean() > 0.6
    # Conversions only on in-stock products.
    in_stock = dict(
        zip(
            world.catalog.column("product_id").to_pylist(),
            world.catalog.column("in_stock").to_pylist(),
        )
    )
    converted = log.column("product_id").to_numpy(zero_copy_only=False)[
        np.isin(kinds, ["add_to_cart", "checkout"])
    ]
    assert all(in_stock[p] for p in converted)


def test_popularity_is_skewed():
    world = generate_world(WorldConfig(products=3000, seed=1))
    _, counts = np.unique(
        world.engagements.column("product_id").to_numpy(zero_copy_only=False), return_counts=True
    )
    top = np.sort(counts)[::-1]
    # The most popular 1% of products get far more than 1% of the engagements.
    assert top[:30].sum() / top.sum() > 0.15


def test_queries_are_near_their_product_in_a_shared_space():
    """Queries of one product on one surface are closer to each other than to other products'."""
    world = generate_world(WorldConfig(products=2000, seed=3, engagements_per_product=10))
    log = world.engagements.filter(pc.equal(world.engagements.column("surface"), "closeup"))
    q = np.stack(log.column("query_embedding").to_numpy(zero_copy_only=False))
    pid = log.column("product_id").to_numpy(zero_copy_only=False)
    same, other = [], []
    for p in np.unique(pid)[:200]:
        rows = q[pid == p]
        if len(rows) >= 2:
            same.append(float(rows[0] @ rows[1]))
            other.append(float(rows[0] @ q[pid != p][0]))
    assert np.mean(same) > np.mean(other) + 0.3
