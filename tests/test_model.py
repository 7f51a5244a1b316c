import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from itemsage_core.contracts.catalog_contract import conform_catalog, validate_catalog
from itemsage_core.contracts.column_mapping import load_mapping
from itemsage_core.features.product_features import encode_products
from itemsage_core.features.vocabulary import VocabConfig, build_vocabulary
from itemsage_core.model.config import PRIME, ModelConfig
from itemsage_core.model.encoder import ItemSageEncoder
from itemsage_core.model.inference import embed_features

MAPPINGS = "conf/mappings"


def encoder(vocab_size, **kw):
    torch.manual_seed(0)
    return ItemSageEncoder(ModelConfig.create(vocab_size, **kw)).eval()


@pytest.fixture(scope="module")
def world_inputs(small_world):
    vocab = build_vocabulary(small_world.catalog)
    return vocab, encode_products(small_world.catalog, vocab, 256)


def test_paper_shape_and_unit_outputs(world_inputs):
    vocab, features = world_inputs
    model = encoder(vocab.size)
    c = model.config
    assert (c.d_model, c.heads, c.ffn_dim, c.layers, c.output_dim) == (512, 8, 2048, 1, 256)
    with torch.inference_mode():
        out = model(features.batch(np.arange(32)))
    assert out.shape == (32, 256)
    assert torch.allclose(out.norm(dim=-1), torch.ones(32), atol=1e-5)


def test_cls_only_path_equals_the_full_forward_on_synthetic_products(world_inputs):
    vocab, features = world_inputs
    for layers in (1, 2):
        model = encoder(vocab.size, layers=layers)
        with torch.inference_mode():
            batch = features.batch()
            full, fast = model(batch, cls_only=False), model(batch, cls_only=True)
        assert (full - fast).abs().max().item() <= 1e-5


def test_cls_only_path_equals_the_full_forward_on_flipkart_products(flipkart_path):
    table = load_mapping(f"{MAPPINGS}/flipkart.toml").apply(pq.read_table(flipkart_path))
    valid = validate_catalog(table).valid.slice(0, 2000)
    vocab = build_vocabulary(valid)
    features = encode_products(valid, vocab, 256)
    model = encoder(vocab.size)
    with torch.inference_mode():
        for start in range(0, len(features), 500):
            batch = features.batch(np.arange(start, min(start + 500, len(features))))
            assert (model(batch, cls_only=False) - model(batch)).abs().max().item() <= 1e-5


def test_embedding_does_not_depend_on_the_batch(world_inputs):
    vocab, features = world_inputs
    counts = np.diff(features.image_offsets)
    few, many = int(np.argmin(counts)), int(np.argmax(counts))
    model = encoder(vocab.size)
    with torch.inference_mode():
        alone = model(features.batch([few]))
        padded = model(features.batch([many, few]))[1:]
    assert torch.allclose(alone, padded, atol=1e-5)


def test_products_without_images_or_with_only_a_title_embed():
    table = conform_catalog(
        pa.table(
            {
                "product_id": ["a", "b", "c"],
                "title": ["red dress", "blue shirt", "x"],
                "image_embeddings": pa.array(
                    [None, [[0.1] * 256], []], pa.list_(pa.list_(pa.float32()))
                ),
            }
        )
    )
    vocab = build_vocabulary(table, VocabConfig(min_count=1))
    features = encode_products(table, vocab, 256)
    out = embed_features(encoder(vocab.size), features)
    assert out.shape == (3, 256) and np.isfinite(out).all()
    assert np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)


def test_hash_embedding_follows_the_formula():
    model = encoder(50, hash_buckets=97, hash_dim=8)
    emb = model.text_embedding
    ids = torch.tensor([3, 7, 3, 49])
    got = emb(ids, torch.tensor([0, 2]))
    (a1, b1), (a2, b2) = model.config.hash_params

    def vector(i):
        h1, h2 = ((a1 * i + b1) % PRIME) % 97, ((a2 * i + b2) % PRIME) % 97
        return emb.importance[i, 0] * emb.table[h1] + emb.importance[i, 1] * emb.table[h2]

    expected = torch.stack([vector(3) + vector(7), vector(3) + vector(49)])
    assert torch.allclose(got, expected, atol=1e-6)


def test_a_single_modality_model_ignores_the_other(world_inputs):
    vocab, features = world_inputs
    batch = features.batch(np.arange(16))
    no_text = dataclasses.replace(batch, text_mask=torch.zeros_like(batch.text_mask))
    no_images = dataclasses.replace(batch, image_mask=torch.zeros_like(batch.image_mask))
    image_only = encoder(vocab.size, modalities=("image",))
    text_only = encoder(vocab.size, modalities=("text",))
    with torch.inference_mode():
        assert torch.equal(image_only(batch), image_only(no_text))
        assert torch.equal(text_only(batch), text_only(no_images))
        assert not torch.allclose(text_only(batch), text_only(no_text))
