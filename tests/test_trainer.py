import numpy as np
import pytest
import torch

from itemsage_core.errors import ItemSageError
from itemsage_core.model.checkpoint import load_checkpoint, save_checkpoint
from itemsage_core.model.config import ModelConfig
from itemsage_core.model.inference import embed_features
from itemsage_core.training.config import TrainConfig
from itemsage_core.training.evaluation import evaluate, ranks
from itemsage_core.training.trainer import prepare_data, train

TINY = {"d_model": 32, "ffn_dim": 64, "mlp_hidden": 32, "hash_buckets": 2000, "hash_dim": 32}


@pytest.fixture(scope="module")
def data(small_world):
    return prepare_data(small_world.catalog, small_world.engagements, 0.1)


def tiny_model(data, seed=0, epochs=2):
    config = ModelConfig.create(data.vocab.size, **TINY)
    return train(
        data,
        config,
        TrainConfig(epochs=epochs, batch_size=64, random_negatives=32, seed=seed, warmup_steps=5),
    )


def test_split_and_summary(data, small_world):
    s = data.summary
    assert s["train_examples"] + s["heldout_examples"] == small_world.engagements.num_rows
    assert s["valid_products"] == len(data.features) == 400


def test_training_is_reproducible_and_lowers_the_loss(data):
    model_a, info = tiny_model(data)
    model_b, _ = tiny_model(data)
    model_c, _ = tiny_model(data, seed=1)
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert not torch.equal(state_a["head.2.weight"], model_c.state_dict()["head.2.weight"])
    losses = [h["loss"] for h in info["history"]]
    assert losses[-1] < losses[0]


def test_trained_model_beats_an_untrained_one(data):
    trained, _ = tiny_model(data, epochs=4)
    torch.manual_seed(0)
    from itemsage_core.model.encoder import ItemSageEncoder

    untrained = ItemSageEncoder(trained.config).eval()
    good = evaluate(trained, data.features, data.heldout).overall
    chance = evaluate(untrained, data.features, data.heldout).overall
    assert good > chance + 0.1


def test_ranks_count_ties_against_the_model():
    index = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], np.float32)
    queries = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    assert ranks(queries, index, np.array([0, 2])).tolist() == [2, 1]


def test_checkpoint_round_trip(tmp_path, data):
    model, _ = tiny_model(data, epochs=1)
    version = save_checkpoint(tmp_path / "m", model, data.vocab, {"image_dim": 256}, {})
    loaded = load_checkpoint(tmp_path / "m")
    assert loaded.model_version == version and version.startswith("itemsage-")
    assert np.array_equal(
        embed_features(model, data.features), embed_features(loaded.model, data.features)
    )
    # Same weights, vocabulary and settings: same version; a rewrite replaces the directory.
    assert save_checkpoint(tmp_path / "m", model, data.vocab, {"image_dim": 256}, {}) == version
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "checkpoint.json",
        "config.json",
        "model.safetensors",
        "vocabulary.json",
    ]


def test_checkpoint_refuses_pickle_and_detects_corruption(tmp_path, data):
    model, _ = tiny_model(data, epochs=1)
    save_checkpoint(tmp_path / "m", model, data.vocab, {"image_dim": 256}, {})
    torch.save({"x": 1}, tmp_path / "m" / "extra.pt")
    with pytest.raises(ItemSageError, match="pickle-like files are refused"):
        load_checkpoint(tmp_path / "m")
    (tmp_path / "m" / "extra.pt").unlink()
    weights = tmp_path / "m" / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.raises(ItemSageError, match="model.safetensors does not match its sha256"):
        load_checkpoint(tmp_path / "m")


def test_save_refuses_to_overwrite_a_directory_that_is_not_a_checkpoint(tmp_path, data):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    model, _ = tiny_model(data, epochs=1)
    with pytest.raises(ItemSageError, match="not a model checkpoint"):
        save_checkpoint(tmp_path / "notes", model, data.vocab, {}, {})
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_catalog_objective_as_an_auxiliary_task(small_world):
    data = prepare_data(small_world.catalog, small_world.engagements, 0.1, neighbours=5)
    assert data.neighbours.shape == (400, 5)
    config = ModelConfig.create(data.vocab.size, **TINY)
    lines = []
    model, info = train(
        data,
        config,
        TrainConfig(epochs=1, batch_size=64, random_negatives=32, catalog_task_weight=0.5),
        progress=lines.append,
    )
    assert "+ 0.5 x 400 catalog products" in lines[0]
    last = info["history"][-1]
    assert last["loss"] == pytest.approx(last["engagements"] + 0.5 * last["catalog"], rel=1e-5)
    assert evaluate(model, data.features, data.heldout).overall > 0


def test_the_catalog_objective_needs_its_neighbours(small_world):
    data = prepare_data(small_world.catalog, small_world.engagements, 0.1)
    config = ModelConfig.create(data.vocab.size, **TINY)
    with pytest.raises(ItemSageError, match="pairs products with their teacher.s neighbours"):
        train(data, config, TrainConfig(epochs=1, catalog_task_weight=1.0))
    train(
        data, config, TrainConfig(epochs=1, batch_size=64, catalog_task_weight=1.0, neighbours=0)
    )  # two views of each product instead
