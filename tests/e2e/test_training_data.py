"""Training data prepared on Spark: the same valid products and vocabulary as in one process."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from itemsage_core.contracts.catalog_contract import validate_catalog
from itemsage_core.contracts.column_mapping import load_mapping
from itemsage_core.features.vocabulary import VocabConfig, build_vocabulary
from itemsage_core.storage.parquet_io import read_parquet
from itemsage_core.training.prepared_data import prepared_files, read_prepared_vocab

pytestmark = pytest.mark.spark

SMALL = VocabConfig(unigrams=60, bigrams=40, trigrams=50, min_count=1)


def read_part(out, manifest: dict, part: str) -> pa.Table:
    """One part of prepared data, from the files its manifest lists."""
    return pa.concat_tables(pq.read_table(f) for f in prepared_files(out, manifest, part))


@pytest.mark.parametrize("config", [VocabConfig(), SMALL], ids=["default", "small"])
def test_vocabulary_on_spark_equals_the_in_process_one(spark, small_world_dir, config):
    from jobs.training_data import valid_products, vocabulary_on_spark

    catalog = str(small_world_dir / "catalog")
    expected = build_vocabulary(validate_catalog(read_parquet(catalog)).valid, config)
    assert vocabulary_on_spark(valid_products(spark, catalog), config).tokens == expected.tokens


def test_vocabulary_on_spark_of_a_real_catalog(spark, flipkart_path, flipkart_mapping):
    from jobs.training_data import valid_products, vocabulary_on_spark

    mapping = load_mapping(flipkart_mapping)
    valid = validate_catalog(mapping.apply(pq.read_table(flipkart_path))).valid
    products = valid_products(spark, str(flipkart_path), mapping)
    assert products.count() == valid.num_rows
    for config in (VocabConfig(), SMALL):
        found = vocabulary_on_spark(products, config)
        assert found.tokens == build_vocabulary(valid, config).tokens


def test_prepared_data_equals_the_in_process_data(spark, small_world, small_world_dir, tmp_path):
    import json

    import numpy as np

    from itemsage_core.features.vocabulary import FEATURES
    from itemsage_core.training.config import PrepareConfig
    from itemsage_core.training.trainer import prepare_data
    from jobs.training_data import prepare_training

    data = prepare_data(small_world.catalog, small_world.engagements, 0.1, vocab_config=SMALL)
    out = tmp_path / "prepared"
    config = PrepareConfig(
        str(small_world_dir / "catalog"),
        str(small_world_dir / "engagements"),
        str(out),
        vocab=SMALL,
        shards=3,
    )
    manifest = prepare_training(spark, config, progress=lambda _: None)
    assert read_prepared_vocab(out, manifest).tokens == data.vocab.tokens
    for key in (
        "catalog_rows",
        "valid_products",
        "engagement_rows",
        "valid_engagements",
        "unknown_product_engagements",
        "train_examples",
        "heldout_examples",
    ):
        assert manifest["counts"][key] == data.summary[key], key
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert {f["path"].split("/")[0] for f in manifest["files"]} == {"products", "train", "heldout"}

    ids = data.features.product_ids.to_pylist()
    for name, examples in (("train", data.train), ("heldout", data.heldout)):
        expected = sorted(
            (ids[p], int(t), q.tobytes())
            for p, t, q in zip(examples.products, examples.tasks, examples.queries)
        )
        prepared = read_part(out, manifest, name)
        found = sorted(
            (pid, task, np.asarray(query, np.float32).tobytes())
            for pid, task, query in zip(
                *(prepared.column(c).to_pylist() for c in ("product_id", "task", "query"))
            )
        )
        assert found == expected, name

    train = read_part(out, manifest, "train").to_pylist()
    by_product = {}
    for row in train:
        by_product.setdefault(row["product_id"], []).append(row["task"])
    products = read_part(out, manifest, "products").to_pylist()
    inputs = {p["product_id"]: p for p in products}
    for row in train[::50]:  # each training example carries its product's inputs and task counts
        product = inputs[row["product_id"]]
        for column in ("token_ids", "bag_offsets", "image_values"):
            assert row[column] == product[column]
        tasks = by_product[row["product_id"]]
        assert row["task_counts"] == [tasks.count(t) for t in range(len(row["task_counts"]))]
    assert len(products) == len(ids)
    bags, per = data.features.bags, len(FEATURES)
    row_of = {pid: row for row, pid in enumerate(ids)}
    for product in products[::97]:
        row = row_of[product["product_id"]]
        for f in range(per):
            start, stop = product["bag_offsets"][f], product["bag_offsets"][f + 1]
            want = bags.ids[bags.offsets[row * per + f] : bags.offsets[row * per + f + 1]]
            assert product["token_ids"][start:stop] == want.tolist()
        first, last = data.features.image_offsets[row], data.features.image_offsets[row + 1]
        images = np.asarray(product["image_values"], np.float32).reshape(-1, 256)
        np.testing.assert_array_equal(images, data.features.image_values[first:last])


def test_prepare_training_command(small_world_dir, tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "prepared"
    command = [
        sys.executable,
        "-m",
        "itemsage_cli.main",
        "prepare-training",
        "--catalog",
        str(small_world_dir / "catalog"),
        "--engagements",
        str(small_world_dir / "engagements"),
        "--out",
        str(out),
        "--vocab",
        "100,100,100",
        "--master",
        "local[2]",
    ]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    manifest = json.loads(first.stdout)
    assert manifest["counts"]["train_examples"] > 0 and manifest["vocab_tokens"] > 0
    assert "prepared" in first.stderr  # progress lines go to stderr
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)  # replaces out
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["counts"] == manifest["counts"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]  # nothing beside it
    assert [p.name for p in out.glob("run-*")] == [json.loads(again.stdout)["run"]]
    broken = [*command[:7], str(tmp_path / "no-such-log"), *command[8:]]
    failed = subprocess.run(broken, capture_output=True, text=True, timeout=600)
    assert failed.returncode == 1, failed.stderr
    assert [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert json.loads((out / "manifest.json").read_text())["counts"] == manifest["counts"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]
    assert [p.name for p in out.glob("run-*")] == [json.loads(again.stdout)["run"]]


def test_two_processes_stream_every_prepared_example_once(spark, small_world_dir, tmp_path):
    import numpy as np

    from itemsage_core.training.config import PrepareConfig
    from itemsage_core.training.prepared_data import task_count_vector
    from itemsage_core.training.streaming import (
        features_of,
        row_groups,
        shard_files,
        shuffled_batches,
        task_acceptance,
        thinned,
    )
    from itemsage_core.training.training_examples import task_probabilities
    from jobs.training_data import prepare_training

    out = tmp_path / "prepared"
    config = PrepareConfig(
        str(small_world_dir / "catalog"),
        str(small_world_dir / "engagements"),
        str(out),
        vocab=SMALL,
        shards=4,
    )
    manifest = prepare_training(spark, config, progress=lambda _: None)
    counts = task_count_vector(manifest["counts"]["train_task_counts"])
    keep_all = task_acceptance(
        task_probabilities(counts, {}, 1.0)
    )  # the natural mix keeps every example
    np.testing.assert_allclose(keep_all[counts > 0], 1.0)
    streamed = []
    for rank in range(2):
        rng = np.random.default_rng(rank)
        files = shard_files(prepared_files(out, manifest, "train"), rank, 2)
        for batch in shuffled_batches(thinned(row_groups(files, rng), keep_all, rng), 64, 500, rng):
            assert len(features_of(batch, 256)) == batch.num_rows
            streamed += batch.column("product_id").to_pylist()
    written = read_part(out, manifest, "train").column("product_id").to_pylist()
    assert sorted(streamed) == sorted(written)
    assert len(written) == manifest["counts"]["train_examples"]


def test_training_streams_prepared_data(spark, small_world_dir, tmp_path):
    import numpy as np

    from itemsage_core.model.config import ModelConfig
    from itemsage_core.model.inference import pick_device
    from itemsage_core.training.config import ENGAGEMENTS, PrepareConfig, StreamConfig, TrainConfig
    from itemsage_core.training.streamed_batches import streamed_objectives
    from itemsage_core.training.trainer import train_objectives
    from jobs.training_data import prepare_training

    out = tmp_path / "prepared"
    config = PrepareConfig(
        str(small_world_dir / "catalog"),
        str(small_world_dir / "engagements"),
        str(out),
        vocab=SMALL,
        shards=2,
    )
    manifest = prepare_training(spark, config, progress=lambda _: None)
    vocab = read_prepared_vocab(out, manifest)
    train_config = TrainConfig(epochs=3, batch_size=64, random_negatives=32, seed=0)
    dev = pick_device("cpu")
    [objective] = streamed_objectives(
        out, {ENGAGEMENTS: 1.0}, train_config, StreamConfig(shuffle_buffer=300, negatives=100)
    )
    assert objective.source.pool.rows.num_rows <= 100
    shape = {"d_model": 32, "ffn_dim": 64, "mlp_hidden": 32, "hash_buckets": 500}
    model_config = ModelConfig.create(vocab.size, **shape)
    model, history = train_objectives([objective], model_config, train_config, dev)
    losses = [entry["loss"] for entry in history["history"]]
    assert history["steps"] == 3 * objective.steps_per_epoch() and all(np.isfinite(losses))
    assert losses[-1] < losses[0]


def test_lexical_neighbours_on_spark_are_the_exact_tfidf_ones(spark, small_world, small_world_dir):
    import numpy as np

    from itemsage_core.contracts.catalog_contract import TEXT_FEATURES, validate_catalog
    from itemsage_core.features.lexical_neighbours import feature_text, tfidf_matrix
    from jobs.lexical_neighbours import lexical_neighbours_on_spark
    from jobs.training_data import valid_products

    valid = validate_catalog(small_world.catalog).valid
    matrix = tfidf_matrix(feature_text(valid, list(TEXT_FEATURES)))
    scores = (matrix @ matrix.T).toarray()
    np.fill_diagonal(scores, -1)
    row = {p: i for i, p in enumerate(valid.column("product_id").to_pylist())}
    products = valid_products(spark, str(small_world_dir / "catalog"))
    # no cap: exact; the synthetic world's commonest term is in fewer than 400 products
    near = lexical_neighbours_on_spark(products, len(row), 5, 400).toPandas()
    assert len(near) == len(row)
    for product, neighbours, found in zip(near.product_id, near.neighbours, near.scores):
        i = row[product]
        best = np.sort(scores[i][scores[i] > 0])[::-1][:5]
        np.testing.assert_allclose(found, [scores[i, row[b]] for b in neighbours], atol=1e-9)
        np.testing.assert_allclose(found, best, atol=1e-9)  # the best, best first
    capped = lexical_neighbours_on_spark(products, len(row), 5, 5).toPandas()
    for found in capped.scores:
        assert list(found) == sorted(found, reverse=True) and len(found) <= 5


def test_catalog_pairs_hold_a_product_and_one_of_its_neighbours(spark, small_world_dir, tmp_path):
    from itemsage_core.training.config import PrepareConfig
    from itemsage_core.training.prepared_data import (
        CATALOG_PAIR_SCHEMA,
        PRODUCT_SCHEMA,
        partners_of,
    )
    from jobs.lexical_neighbours import lexical_neighbours_on_spark
    from jobs.training_data import prepare_training, valid_products

    out = tmp_path / "prepared"
    config = PrepareConfig(
        str(small_world_dir / "catalog"), None, str(out), vocab=SMALL, shards=2, neighbours=4
    )
    manifest = prepare_training(spark, config, progress=lambda _: None)
    counts = manifest["counts"]
    assert counts["catalog_pairs"] == 2 * counts["valid_products"] == 800
    assert "train_examples" not in counts and not prepared_files(out, manifest, "train")
    pairs = read_part(out, manifest, "catalog_pairs")
    assert pairs.schema.names == CATALOG_PAIR_SCHEMA.names and pairs.num_rows == 800
    near = lexical_neighbours_on_spark(
        valid_products(spark, str(small_world_dir / "catalog")), 400, 4, 1000
    ).toPandas()
    allowed = dict(zip(near.product_id, near.neighbours))
    products = {r["product_id"]: r for r in read_part(out, manifest, "products").to_pylist()}
    partners = partners_of(pairs).to_pylist()
    for product, partner in zip(pairs.select(PRODUCT_SCHEMA.names).to_pylist(), partners):
        assert partner["product_id"] in allowed.get(product["product_id"], [product["product_id"]])
        assert partner == products[partner["product_id"]]
        assert product == products[product["product_id"]]
