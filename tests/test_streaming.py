"""Streaming prepared training data with bounded memory: shards per process, shuffled batches,
task mixing by thinning, a pool of random negatives, encoder inputs read back exactly."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from itemsage_core.contracts.catalog_contract import validate_catalog
from itemsage_core.errors import ItemSageError
from itemsage_core.features.product_features import encode_products
from itemsage_core.features.vocabulary import VocabConfig, build_vocabulary
from itemsage_core.training.prepared_data import product_rows
from itemsage_core.training.streaming import (
    features_of,
    log_q,
    negative_pool,
    shard_files,
    shuffled_batches,
    task_acceptance,
    thinned,
)
from itemsage_core.training.training_examples import (
    TASKS,
    sampling_probabilities,
    task_probabilities,
)


@pytest.fixture(scope="module")
def products(small_world):
    valid = validate_catalog(small_world.catalog).valid
    vocab = build_vocabulary(valid, VocabConfig(min_count=1))
    return valid, vocab, product_rows(valid, vocab, 256)


def test_encoder_inputs_read_back_exactly(products):
    valid, vocab, rows = products
    pieces = pa.concat_tables([rows.slice(0, 7), rows.slice(7, 150), rows.slice(157)])
    for table, start in ((rows, 0), (pieces, 0), (rows.slice(3, 40), 3)):
        found = features_of(table, 256)
        want = encode_products(valid.slice(start, table.num_rows), vocab, 256)
        np.testing.assert_array_equal(found.bags.ids, want.bags.ids)
        np.testing.assert_array_equal(found.bags.offsets, want.bags.offsets)
        np.testing.assert_array_equal(found.image_values, want.image_values)
        np.testing.assert_array_equal(found.image_offsets, want.image_offsets)
        assert found.product_ids.to_pylist() == want.product_ids.to_pylist()


def test_every_row_once_and_the_buffer_stays_bounded():
    rng = np.random.default_rng(0)
    tables = [pa.table({"i": np.arange(k * 100, (k + 1) * 100)}) for k in range(20)]
    consumed = []

    def source():
        for table in tables:
            consumed.append(table.num_rows)
            yield table

    seen, out = [], 0
    for batch in shuffled_batches(source(), 32, 250, rng):
        out += batch.num_rows
        assert sum(consumed) - out <= 250 + 100  # held: the buffer and the table being added
        seen += batch.column("i").to_pylist()
    assert sorted(seen) == list(range(2000))
    assert seen[:100] != list(range(100))  # shuffled


def test_thinning_gives_each_task_its_share():
    rng = np.random.default_rng(1)
    counts = np.zeros(len(TASKS), np.int64)
    counts[[0, 5]] = [18_000, 2_000]
    tasks = np.repeat([0, 5], [18_000, 2_000]).astype(np.int16)
    table = pa.table({"task": tasks})
    for exponent, share in ((1.0, 0.1), (0.0, 0.5), (0.5, 0.25)):
        kept = pa.concat_tables(
            thinned([table], task_acceptance(task_probabilities(counts, {}, exponent)), rng)
        )
        found = float(np.mean(kept.column("task").to_numpy() == 5))
        assert found == pytest.approx(share, abs=0.02), exponent
    weighted = task_acceptance(task_probabilities(counts, {TASKS[5]: 3.0}, 1.0))
    assert weighted[5] == 1.0 and weighted[0] == pytest.approx(2_000 * 3 / 18_000 / 1.0, rel=0.01)


def test_each_process_reads_its_own_shards(tmp_path):
    files = [str(tmp_path / f"part-{i}.parquet") for i in range(5)]
    ranks = [shard_files(files, r, 2) for r in range(2)]
    assert sorted(ranks[0] + ranks[1]) == files
    assert not set(ranks[0]) & set(ranks[1])
    with pytest.raises(ItemSageError, match="--shards 6"):
        shard_files(files, 0, 6)


def test_negative_pool_is_bounded_and_drawn_from_every_shard(products, tmp_path):
    _, _, rows = products
    assert rows.num_rows == 400
    for i in range(4):
        pq.write_table(rows.slice(i * 100, 100), tmp_path / f"part-{i}.parquet", row_group_size=20)
    rng = np.random.default_rng(2)
    pool = negative_pool(sorted(tmp_path.glob("*.parquet")), rows.num_rows, 60, rng)
    assert 30 <= pool.num_rows <= 60
    assert len(set(pool.column("product_id").to_pylist())) == pool.num_rows
    whole = negative_pool(sorted(tmp_path.glob("*.parquet")), rows.num_rows, 10_000, rng)
    assert whole.num_rows == rows.num_rows


def test_log_q_is_the_in_memory_correction():
    rng = np.random.default_rng(3)
    products, tasks = rng.integers(0, 50, 3000), rng.integers(0, len(TASKS), 3000)
    weights, exponent = {TASKS[2]: 2.0}, 0.5
    probabilities = sampling_probabilities(tasks, weights, exponent)
    expected = np.log(np.maximum(np.bincount(products, weights=probabilities, minlength=50), 1e-12))
    per_product = np.zeros((50, len(TASKS)), np.int32)
    np.add.at(per_product, (products, tasks), 1)
    per_task = task_probabilities(np.bincount(tasks, minlength=len(TASKS)), weights, exponent)
    column = pa.chunked_array([pa.array(per_product.tolist(), pa.list_(pa.int32()))])
    np.testing.assert_allclose(log_q(column, per_task), expected.astype(np.float32), rtol=1e-5)
