"""Dense feature columns (pretrained embeddings): the mapping's [dense.NAME], their row rules, the
encoder's dense tokens, views, the teacher mix, the content hash, and train -> evaluate -> embed
checks of a model that reads them (docs/data-contracts.md, docs/model.md)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from itemsage_cli.main import cli
from itemsage_core.contracts.catalog_contract import conform_catalog, validate_catalog
from itemsage_core.contracts.column_mapping import parse_mapping
from itemsage_core.contracts.dense_features import dense_columns, require_dense
from itemsage_core.embedding.content_hash import content_hashes
from itemsage_core.errors import ContractError, ItemSageError
from itemsage_core.features.lexical_neighbours import sparse_scores, tfidf_matrix, top_k
from itemsage_core.features.product_features import encode_products
from itemsage_core.features.sentence_text import SentenceEncoder
from itemsage_core.features.teacher_neighbours import (
    check_teacher,
    default_teacher,
    mutual_neighbours,
    parse_teacher,
    teacher_neighbours,
)
from itemsage_core.features.vocabulary import VocabConfig, build_vocabulary
from itemsage_core.model.checkpoint import load_checkpoint, read_checkpoint_manifest
from itemsage_core.model.config import ModelConfig
from itemsage_core.model.encoder import ItemSageEncoder
from itemsage_core.training.catalog_views import view_pairs
from itemsage_core.training.config import ViewConfig

TINY = {"d_model": 32, "ffn_dim": 64, "mlp_hidden": 32, "hash_buckets": 2000, "hash_dim": 32}
KINDS = ["shoe", "shirt", "lamp", "mug"]
DIM = 8


def raw_catalog(n=40, seed=3) -> pa.Table:
    """Products of four kinds whose `vec` column (a stand-in for a sentence embedding, which a
    test cannot compute here without the model) points near its kind's direction."""
    rng = np.random.default_rng(seed)
    kinds = np.arange(n) % 4
    centres = np.eye(DIM, dtype=np.float32)[:4] * 3
    vectors = centres[kinds] + rng.normal(size=(n, DIM)).astype(np.float32)
    return pa.table(
        {
            "sku": [f"p{i}" for i in range(n)],
            "name": [f"item {KINDS[k]} x{i % 7}" for i, k in enumerate(kinds)],
            "category": [f"{'Home' if k > 1 else 'Fashion'} > {KINDS[k]}" for k in kinds],
            "vec": pa.array(list(vectors), pa.list_(pa.float32())),
        }
    )


MAPPING = {
    "features": {
        "product_id": {"from": "sku"},
        "title": {"from": "name"},
        "product_type": {"from": "category"},
    },
    "dense": {"text_embedding": {"from": "vec", "dim": DIM}},
}


def test_a_mapping_declares_dense_features_on_the_mapped_schema():
    mapping = parse_mapping(MAPPING)
    table = conform_catalog(mapping.apply(raw_catalog()))
    assert dense_columns(table.schema) == {"text_embedding": DIM}
    assert table.schema.field("text_embedding").type == pa.list_(pa.float32())
    assert "vec" not in table.column_names  # a source that a rule reads is not passed through
    only_dense = parse_mapping({"dense": {"e": {"from": "vec", "dim": DIM}}})
    assert dense_columns(only_dense.apply(raw_catalog()).schema) == {"e": DIM}


@pytest.mark.parametrize(
    "dense,message",
    [
        ({"e": {"from": "vec"}}, "'dim' must be a whole number"),
        ({"e": {"from": "vec", "dim": 0}}, "'dim' must be a whole number"),
        ({"e": {"from": "vec", "dim": 8, "sep": " "}}, r"unknown key\(s\) \['sep'\]"),
        ({"title": {"from": "vec", "dim": 8}}, "not a catalog column"),
        ({"Bad-Name": {"from": "vec", "dim": 8}}, "lower-case letters"),
        ({"e": {"dim": 8}}, "'from' must be a column name"),
    ],
)
def test_bad_dense_sections_are_one_line_errors(dense, message):
    with pytest.raises(ContractError, match=message):
        parse_mapping({"features": {"title": {"from": "name"}}, "dense": dense})


def test_a_dense_column_that_is_not_a_vector_stops_the_run():
    mapping = parse_mapping({"dense": {"e": {"from": "name", "dim": DIM}}})
    with pytest.raises(ContractError, match="must be list<float>"):
        mapping.apply(raw_catalog())


def test_bad_dense_rows_are_rejected_with_a_reason_and_null_means_absent():
    raw = raw_catalog(6)
    vectors = raw.column("vec").to_pylist()
    vectors[1] = vectors[1][:3]
    vectors[2] = [float("nan")] + vectors[2][1:]
    vectors[3] = None
    raw = raw.set_column(3, "vec", pa.array(vectors, pa.list_(pa.float32())))
    checked = validate_catalog(parse_mapping(MAPPING).apply(raw))
    reasons = dict(
        zip(
            checked.rejected.column("product_id").to_pylist(),
            checked.rejected.column("reason").to_pylist(),
        )
    )
    assert reasons == {
        "p1": "dense_dim_mismatch: text_embedding has 3 values, not 8",
        "p2": "dense_not_finite: text_embedding holds NaN, inf or null",
    }
    assert checked.report.rule_counts["dense_dim_mismatch"] == 1
    assert "p3" in checked.valid.column("product_id").to_pylist()


def _model_and_features(dense: bool):
    table = conform_catalog(parse_mapping(MAPPING).apply(raw_catalog()))
    vocab = build_vocabulary(table, VocabConfig(min_count=1))
    torch.manual_seed(0)
    config = ModelConfig.create(
        vocab.size, dense=(("text_embedding", DIM),) if dense else (), **TINY
    )
    model = ItemSageEncoder(config).eval()
    return model, encode_products(table, vocab, 256, config.dense_dims), table


def test_the_encoder_reads_dense_tokens_exactly_and_masks_absent_ones():
    model, features, _ = _model_and_features(dense=True)
    batch = features.batch()
    with torch.no_grad():
        assert torch.allclose(model(batch), model(batch, cls_only=False), atol=1e-5)
        moved = dataclasses.replace(batch, dense=(batch.dense[0] + 1,))
        assert not torch.allclose(model(batch), model(moved))
        absent = dataclasses.replace(batch, dense_mask=torch.zeros_like(batch.dense_mask))
        moved_absent = dataclasses.replace(absent, dense=(batch.dense[0] + 1,))
        assert torch.equal(model(absent), model(moved_absent))  # a masked token is not read
    without, plain, _ = _model_and_features(dense=False)
    assert not plain.dense and plain.dense_present is None
    assert set(without.state_dict()) < set(model.state_dict())  # old checkpoints load as before


def test_views_keep_or_split_dense_units():
    _, features, _ = _model_and_features(dense=True)
    rows = np.array([0, 1, 0, 1, 5])
    rng = np.random.default_rng(0)
    viewed = view_pairs(features.batch(rows), 2, rng, ViewConfig(token_drop=0.0))
    both = np.concatenate([viewed.text_mask.numpy(), viewed.dense_mask.numpy()], axis=1)
    first, second = both[:2], both[2:4]
    assert not (first & second).any()  # split views share no unit
    assert (
        (first | second)
        == np.concatenate(
            [features.batch(rows[:2]).text_mask.numpy(), features.dense_present[rows[:2]]], axis=1
        )
    ).all()
    assert viewed.dense_mask[4]  # the negative stays whole


def test_the_teacher_mixes_tfidf_and_dense_cosine():
    texts = ["red shoe", "red mug", "blue shoe", "blue mug"]
    dense = {"e": np.array([[1, 0], [0, 1], [1, 0.1], [0.1, 1]], np.float32)}
    assert (
        teacher_neighbours(texts, dense, {"tfidf": 1.0}, 1)
        == top_k(sparse_scores(tfidf_matrix(texts)), np.arange(4), 1, 4)
    ).all()
    assert teacher_neighbours(texts, dense, {"e": 1.0}, 1)[:, 0].tolist() == [2, 3, 0, 1]
    assert parse_teacher("tfidf=0.3, e=0.7") == (("tfidf", 0.3), ("e", 0.7))
    assert default_teacher([]) == {"tfidf": 1.0}
    assert default_teacher(["e"]) == {"tfidf": 0.5, "e": 0.5}
    with pytest.raises(ItemSageError, match="'x' is not a number"):
        parse_teacher("tfidf=x")
    with pytest.raises(ItemSageError, match="neither tfidf nor a dense feature"):
        check_teacher({"image": 1.0}, ["e"])


def test_the_content_hash_covers_dense_values_only_when_there_are_some():
    _, _, table = _model_and_features(dense=True)
    plain = table.drop_columns(["text_embedding"])
    assert content_hashes(plain).equals(content_hashes(conform_catalog(plain)))
    vectors = table.column("text_embedding").to_pylist()
    vectors[0] = [v + 1 for v in vectors[0]]
    changed = table.set_column(
        table.column_names.index("text_embedding"),
        table.schema.field("text_embedding"),
        pa.array(vectors, pa.list_(pa.float32())),
    )
    before, after = content_hashes(table).to_pylist(), content_hashes(changed).to_pylist()
    assert before[0] != after[0] and before[1:] == after[1:]
    assert content_hashes(plain).to_pylist()[1:] != before[1:]


def test_require_dense_names_the_fix():
    with pytest.raises(ContractError, match="featurize the catalog"):
        require_dense({}, {"text_embedding": 384})
    with pytest.raises(ContractError, match="is 8-d, the model reads 384-d"):
        require_dense({"text_embedding": 8}, {"text_embedding": 384})
    require_dense({"text_embedding": 384, "other": 2}, {"text_embedding": 384})


def test_train_evaluate_and_embed_with_dense_features(tmp_path, spark, minilm_dir):
    catalog = tmp_path / "catalog.parquet"
    pq.write_table(raw_catalog(80), catalog)
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(
        '[features.product_id]\nfrom = "sku"\n[features.title]\nfrom = "name"\n'
        '[features.product_type]\nfrom = "category"\n'
        f'[dense.text_embedding]\nfrom = "vec"\ndim = {DIM}\n'
    )
    runner = CliRunner()
    model = tmp_path / "m"
    shape = [
        "--d-model",
        "32",
        "--ffn-dim",
        "64",
        "--hash-buckets",
        "2000",
        "--vocab",
        "500,500,500",
    ]
    common = ["--catalog", str(catalog), "--mapping", str(mapping)]
    result = runner.invoke(
        cli,
        [
            "train",
            *common,
            "--out",
            str(model),
            *shape,
            "--epochs",
            "2",
            "--neighbours",
            "5",
            "--exclude-feature",
            "product_type",
            "--teacher",
            "tfidf=0.2,text_embedding=0.8",
            "--mutual-neighbours",
        ],
    )
    assert result.exit_code == 0, result.output
    checkpoint = load_checkpoint(model)
    assert checkpoint.model.config.dense == (("text_embedding", DIM),)
    assert checkpoint.config["train"]["teacher"] == [["tfidf", 0.2], ["text_embedding", 0.8]]
    assert checkpoint.config["train"]["mutual_neighbours"] is True
    data = read_checkpoint_manifest(model)["summary"]["data"]
    assert 0 < data["mutual_neighbours"] < 80 * 5

    result = runner.invoke(
        cli,
        [
            "evaluate-catalog",
            "--model",
            str(model),
            *common,
            "--label-column",
            "product_type",
            "--exclude-feature",
            "product_type",
            "--baseline-model",
            str(minilm_dir),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    # The MiniLM row: the sentence encoder's own neighbours over the same text, by hand.
    agreement = json.loads(result.stdout)["agreement"]
    products = validate_catalog(parse_mapping(MAPPING).apply(raw_catalog(80))).valid
    texts = [t.lower() for t in products.column("title").to_pylist()]  # already normalised
    vectors = SentenceEncoder.load(minilm_dir).encode(texts)
    labels = products.column("product_type").to_pylist()
    near = top_k(lambda rows: vectors[rows] @ vectors.T, np.arange(80), 10, 80)
    for level, of in (("full path", lambda v: v), ("top level", lambda v: v.split(" > ")[0])):
        share = np.mean(
            [[of(labels[j]) == of(labels[i]) for j in row] for i, row in enumerate(near)]
        )
        assert agreement[level]["all-MiniLM-L6-v2"] == pytest.approx(share, abs=1e-9)
    assert set(agreement["top level"]) == {"itemsage", "tfidf", "all-MiniLM-L6-v2", "random"}

    plain = tmp_path / "plain.toml"
    plain.write_text(mapping.read_text().split("[dense.")[0])
    result = runner.invoke(
        cli,
        [
            "evaluate-catalog",
            "--model",
            str(model),
            "--catalog",
            str(catalog),
            "--mapping",
            str(plain),
            "--label-column",
            "product_type",
        ],
    )
    assert result.exit_code != 0
    assert "reads dense feature 'text_embedding' (8-d)" in result.output

    result = runner.invoke(
        cli,
        ["embed", *common, "--model", str(model), "--table", str(tmp_path / "t")],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        cli,
        [
            "embed",
            "--catalog",
            str(catalog),
            "--mapping",
            str(plain),
            "--model",
            str(model),
            "--table",
            str(tmp_path / "t2"),
        ],
    )
    assert result.exit_code != 0 and "featurize the catalog" in result.output
    assert not (tmp_path / "t2").exists()

    result = runner.invoke(
        cli, ["train", *common, "--out", str(tmp_path / "m2"), "--num-processes", "2"]
    )
    assert result.exit_code != 0 and "dense features" in result.output


def test_mutual_neighbours_keep_the_pairs_listed_both_ways():
    near = np.array([[1, 2], [0, 2], [3, 0], [2, 1]])
    assert mutual_neighbours(near).tolist() == [[1, 2], [0, -1], [3, 0], [2, -1]]
    assert mutual_neighbours(np.array([[1], [2], [0]])).tolist() == [[-1], [-1], [-1]]
