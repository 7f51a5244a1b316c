"""Catalog-supervised training and `evaluate-catalog`: label agreement of neighbours beside TF-IDF
and random, checked against a direct computation, and a model trained on a real catalog slice."""

from __future__ import annotations

import json
import math
import re
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from itemsage_cli.main import cli
from itemsage_core.contracts.catalog_contract import conform_catalog
from itemsage_core.contracts.column_mapping import load_mapping
from itemsage_core.errors import ItemSageError
from itemsage_core.features.product_features import encode_products
from itemsage_core.features.vocabulary import VocabConfig, build_vocabulary
from itemsage_core.model.config import ModelConfig
from itemsage_core.model.encoder import ItemSageEncoder
from itemsage_core.model.inference import embed_features
from itemsage_core.training.catalog_quality import evaluate_catalog, label_levels
from itemsage_core.training.catalog_views import view_pairs
from itemsage_core.training.config import TrainConfig, ViewConfig
from itemsage_core.training.model_runs import read_mapped_catalog
from itemsage_core.training.trainer import prepare_catalog_data, train

MAPPING = "conf/mappings/flipkart.toml"
TINY = {"d_model": 32, "ffn_dim": 64, "mlp_hidden": 32, "hash_buckets": 2000, "hash_dim": 32}
KINDS = ["shoe", "shirt", "lamp", "mug"]
COLOURS = ["red", "blue", "green", "black", "white"]


def tiny_catalog(n=40) -> pa.Table:
    rng = np.random.default_rng(3)
    kinds = [KINDS[i % 4] for i in range(n)]
    return pa.table(
        {
            "product_id": [f"p{i}" for i in range(n)],
            "title": [
                f"{COLOURS[rng.integers(5)]} {k} {COLOURS[rng.integers(5)]} x{i % 7}"
                for i, k in enumerate(kinds)
            ],
            "brand": [["acme", "zeta", None][i % 3] for i in range(n)],
            "product_type": [
                f"{'Home' if k in ('lamp', 'mug') else 'Fashion'} > {k}" for k in kinds
            ],
        }
    )


def tfidf_by_hand(texts: list[str]) -> np.ndarray:
    """Unigrams + bigrams of \\w\\w+ words, 1 + log tf, smooth idf, l2 rows (scikit-learn's)."""
    grams = []
    for text in texts:
        words = re.findall(r"\b\w\w+\b", text.lower())
        grams.append(Counter(words + [f"{a} {b}" for a, b in zip(words, words[1:])]))
    terms = sorted(set().union(*grams))
    df = Counter(t for g in grams for t in g)
    n = len(texts)
    matrix = np.zeros((n, len(terms)))
    for i, g in enumerate(grams):
        for j, term in enumerate(terms):
            if g[term]:
                idf = math.log((1 + n) / (1 + df[term])) + 1
                matrix[i, j] = (1 + math.log(g[term])) * idf
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def share_by_hand(scores: np.ndarray, labels: list, k: int) -> float:
    shares = []
    for q in range(len(labels)):
        order = [j for j in np.argsort(-scores[q], kind="stable") if j != q][:k]
        shares.append(np.mean([labels[j] == labels[q] for j in order]))
    return float(np.mean(shares))


def test_figures_equal_a_direct_computation():
    table = tiny_catalog()
    vocab = build_vocabulary(conform_catalog(table), VocabConfig(min_count=1))
    torch.manual_seed(0)
    model = ItemSageEncoder(ModelConfig.create(vocab.size, **TINY)).eval()
    k = 5
    result = evaluate_catalog(model, vocab, table, "product_type", 256, queries=1000, k=k)
    assert result.products == result.queries == 40  # every product is a query
    top = [p.split(" > ")[0] for p in table.column("product_type").to_pylist()]
    full = table.column("product_type").to_pylist()

    vectors = embed_features(model, encode_products(conform_catalog(table), vocab, 256))
    cosine = vectors @ vectors.T
    texts = [
        " ".join(x for x in row if x)
        for row in zip(*(table.column(c).to_pylist() for c in ("title", "brand", "product_type")))
    ]
    tfidf = tfidf_by_hand(texts)
    for level, labels in (("top level", top), ("full path", full)):
        got = result.agreement[level]
        assert got["itemsage"] == pytest.approx(share_by_hand(cosine, labels, k), abs=1e-9)
        assert got["tfidf"] == pytest.approx(share_by_hand(tfidf @ tfidf.T, labels, k), abs=1e-9)
        same = [sum(x == y for x in labels) - 1 for y in labels]
        assert got["random"] == pytest.approx(np.mean(same) / 39)

    withheld = evaluate_catalog(
        model, vocab, table, "product_type", 256, k=k, exclude=("product_type",)
    )
    assert withheld.features == ("title", "brand")
    texts = [
        " ".join(x for x in row if x)
        for row in zip(*(table.column(c).to_pylist() for c in ("title", "brand")))
    ]
    tfidf = tfidf_by_hand(texts)
    assert withheld.agreement["top level"]["tfidf"] == pytest.approx(
        share_by_hand(tfidf @ tfidf.T, top, k), abs=1e-9
    )
    assert set(withheld.coverage["per_feature"]) == {"title", "brand"}
    assert result.coverage["word_coverage"] == 1.0  # the vocabulary is this catalog's


def test_label_levels_and_clear_errors():
    levels = label_levels(["A > B", "A > C", None, "D"])
    assert levels["top level"].tolist() == [0, 0, -1, 1]
    assert levels["full path"].tolist() == [0, 1, -1, 2]
    assert list(label_levels(["x", "y", "x"])) == ["label"]
    table = tiny_catalog()
    vocab = build_vocabulary(conform_catalog(table))
    model = ItemSageEncoder(ModelConfig.create(vocab.size, **TINY)).eval()
    with pytest.raises(ItemSageError, match="label column 'category' is not in the catalog"):
        evaluate_catalog(model, vocab, table, "category", 256)
    with pytest.raises(ItemSageError, match="not a text feature"):
        evaluate_catalog(model, vocab, table, "product_type", 256, exclude=("price",))


def test_views_split_a_products_units_and_keep_negatives_whole():
    table = conform_catalog(tiny_catalog(8))
    features = encode_products(table, build_vocabulary(table, VocabConfig(min_count=1)), 256)
    rows = np.array([0, 1, 2, 0, 1, 2, 5, 6])
    whole = features.batch(rows)
    viewed = view_pairs(whole, 3, np.random.default_rng(0), ViewConfig(token_drop=0.0))
    first, second = viewed.text_mask[:3].numpy(), viewed.text_mask[3:6].numpy()
    assert not (first & second).any()  # every product here has 3 features: disjoint views
    assert ((first | second) == whole.text_mask[:3].numpy()).all()
    assert first.any(axis=1).all() and second.any(axis=1).all()
    assert (viewed.text_mask[6:] == whole.text_mask[6:]).all()
    lengths = np.diff(np.append(viewed.bag_offsets.numpy(), len(viewed.token_ids)))
    assert len(viewed.token_ids) == lengths.sum()


@pytest.fixture(scope="module")
def flipkart_slice(flipkart_path) -> pa.Table:
    """3,000 real products (a fixed sample), mapped."""
    table = read_mapped_catalog(str(flipkart_path), load_mapping(MAPPING))
    pick = np.sort(np.random.default_rng(0).choice(table.num_rows, 3000, replace=False))
    return table.take(pick)


def test_catalog_training_on_a_real_slice_beats_random_widely(flipkart_slice):
    """No engagement log: the model learns from the catalog's text alone."""
    data = prepare_catalog_data(flipkart_slice.drop_columns(["product_type"]))
    config = ModelConfig.create(data.vocab.size, **{**TINY, "d_model": 64, "mlp_hidden": 64})
    model, info = train(
        data, config, TrainConfig(epochs=6, batch_size=128, random_negatives=64, warmup_steps=10)
    )
    assert info["history"][-1]["loss"] < info["history"][0]["loss"]
    torch.manual_seed(0)
    untrained = ItemSageEncoder(config).eval()
    kw = {"label_column": "product_type", "image_dim": 256, "exclude": ("product_type",)}
    trained = evaluate_catalog(model, data.vocab, flipkart_slice, **kw)
    before = evaluate_catalog(untrained, data.vocab, flipkart_slice, **kw)
    top = trained.agreement["top level"]
    assert top["itemsage"] > top["random"] + 0.5
    assert top["itemsage"] > before.agreement["top level"]["itemsage"] + 0.05


def test_cli_trains_on_a_catalog_alone_then_evaluates_it(tmp_path, flipkart_slice):
    pq.write_table(flipkart_slice.slice(0, 800), tmp_path / "mapped.parquet")
    catalog = ["--catalog", str(tmp_path / "mapped.parquet")]
    trained = CliRunner().invoke(
        cli,
        [
            "train",
            *catalog,
            "--out",
            str(tmp_path / "m"),
            "--d-model",
            "32",
            "--ffn-dim",
            "64",
            "--hash-buckets",
            "2000",
            "--epochs",
            "2",
            "--batch-size",
            "64",
            "--random-negatives",
            "16",
            "--exclude-feature",
            "product_type",
        ],
    )
    assert trained.exit_code == 0, trained.output
    assert "training on 800 catalog products" in trained.output
    assert "check it: itemsage evaluate-catalog" in trained.output
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["objective"] == "catalog"
    assert config["excluded_features"] == ["product_type"]
    evaluated = CliRunner().invoke(
        cli,
        [
            "evaluate-catalog",
            "--model",
            str(tmp_path / "m"),
            *catalog,
            "--label-column",
            "product_type",
            "--exclude-feature",
            "product_type",
            "--json",
        ],
    )
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.stdout)
    assert report["products"] == 800 and report["queries"] == 800
    assert set(report["agreement"]) == {"top level", "full path"}
    assert report["features"] == ["title", "brand"]
    text = CliRunner().invoke(
        cli,
        [
            "evaluate-catalog",
            "--model",
            str(tmp_path / "m"),
            *catalog,
            "--label-column",
            "product_type",
        ],
    )
    assert text.exit_code == 0 and "tfidf" in text.output and "vocabulary coverage" in text.output
    wrong = CliRunner().invoke(
        cli, ["train", *catalog, "--out", str(tmp_path / "x"), "--catalog-task-weight", "1"]
    )
    assert wrong.exit_code == 2 and "beside --engagements" in wrong.output
