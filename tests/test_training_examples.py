import numpy as np
import pyarrow as pa
import pytest

from itemsage_core.errors import ItemSageError
from itemsage_core.training.training_examples import (
    TASKS,
    build_examples,
    holdout_mask,
    parse_tasks,
    sampling_probabilities,
)


def test_parse_tasks():
    assert parse_tasks("all") == TASKS
    assert parse_tasks("add_to_cart") == (
        "home/add_to_cart",
        "closeup/add_to_cart",
        "search/add_to_cart",
    )
    assert parse_tasks("search/click, home") == (
        "home/click",
        "home/save",
        "home/add_to_cart",
        "home/checkout",
        "search/click",
    )
    with pytest.raises(ItemSageError, match="unknown task 'buy'"):
        parse_tasks("buy")


def test_holdout_is_deterministic_and_independent_of_row_order(small_world):
    log = small_world.engagements
    held = holdout_mask(log, 0.1)
    assert 0.07 < held.mean() < 0.13
    order = np.random.default_rng(0).permutation(log.num_rows)
    shuffled = holdout_mask(log.take(order), 0.1)
    assert np.array_equal(shuffled, held[order])
    assert np.array_equal(holdout_mask(log, 0.1), held)


def test_task_shares_follow_weight_times_count_to_the_exponent():
    tasks = np.array([0] * 900 + [1] * 100)
    natural = sampling_probabilities(tasks, {}, 1.0)
    assert np.isclose(natural[tasks == 1].sum(), 0.1)
    uniform = sampling_probabilities(tasks, {}, 0.0)
    assert np.isclose(uniform[tasks == 1].sum(), 0.5)
    sqrt = sampling_probabilities(tasks, {TASKS[1]: 3.0}, 0.5)
    assert np.isclose(sqrt[tasks == 1].sum(), 3 * 10 / (30 + 3 * 10))
    assert np.isclose(sqrt.sum(), 1.0)


def test_examples_of_unknown_products_are_counted_not_kept(small_world):
    log = small_world.engagements
    catalog_ids = small_world.catalog.column("product_id").combine_chunks()[:200]
    examples, unknown = build_examples(log, catalog_ids)
    assert len(examples) + unknown == log.num_rows and unknown > 0
    assert examples.products.max() < 200
    ids = catalog_ids.take(pa.array(examples.products)).to_pylist()
    known = [p for p in log.column("product_id").to_pylist() if p in set(catalog_ids.to_pylist())]
    assert ids == known
    assert examples.queries.shape == (len(examples), 256)
