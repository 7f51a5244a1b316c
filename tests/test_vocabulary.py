import numpy as np
import pyarrow as pa
import pytest

from itemsage_core.contracts.catalog_contract import conform_catalog
from itemsage_core.errors import ContractError
from itemsage_core.features.text_tokens import KINDS, tokenize, trigram_text
from itemsage_core.features.vocabulary import FEATURES, VocabConfig, Vocabulary, build_vocabulary


def catalog(titles, brands=None):
    data = {"product_id": [f"p{i}" for i in range(len(titles))], "title": titles}
    if brands is not None:
        data["brand"] = brands
    return conform_catalog(pa.table(data))


def test_top_k_by_count_then_text_with_min_count():
    table = catalog(["red dress", "red shirt", "blue dress", "red hat", "green hat"])
    vocab = build_vocabulary(table, VocabConfig(unigrams=3, min_count=2))
    assert vocab.tokens["title"]["unigram"] == ["red", "dress", "hat"]
    assert vocab.tokens["title"]["bigram"] == []  # every bigram is seen once


def test_ids_are_disjoint_per_feature_and_kind():
    table = catalog(["red red"] * 3, brands=["red"] * 3)
    vocab = build_vocabulary(table, VocabConfig(min_count=1))
    ranges = [
        (vocab.base[f, k], vocab.base[f, k] + len(vocab.tokens[f][k]))
        for f in FEATURES
        for k in KINDS
    ]
    assert ranges[0][0] == 0 and ranges[-1][1] == vocab.size
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    bags = vocab.encode(table)
    title = bags.ids[bags.offsets[0] : bags.offsets[1]]
    brand = bags.ids[bags.offsets[2] : bags.offsets[3]]
    assert not set(title) & set(brand)  # "red" in a title is not "red" as a brand


def test_encode_matches_a_plain_python_reading(small_world):
    table = small_world.catalog.slice(0, 60)
    vocab = build_vocabulary(small_world.catalog, VocabConfig(unigrams=40, bigrams=40, trigrams=40))
    bags = vocab.encode(table)
    F = len(FEATURES)
    for f_index, feature in enumerate(FEATURES):
        lookup = {
            (k, t): vocab.base[feature, k] + i
            for k in KINDS
            for i, t in enumerate(vocab.tokens[feature][k])
        }
        for row in range(table.num_rows):
            tokens = tokenize(table.column(feature).combine_chunks().slice(row, 1))
            expected = [lookup.get(("unigram", t)) for t in tokens.unigrams.to_pylist()]
            expected += [lookup.get(("bigram", t)) for t in tokens.bigrams.to_pylist()]
            expected += [lookup.get(("trigram", t)) for t in trigram_text(tokens.trigrams)]
            bag = row * F + f_index
            got = bags.ids[bags.offsets[bag] : bags.offsets[bag + 1]]
            assert sorted(got.tolist()) == sorted(i for i in expected if i is not None)


def test_out_of_vocabulary_tokens_are_dropped():
    vocab = build_vocabulary(catalog(["red dress"] * 2), VocabConfig(min_count=1))
    bags = vocab.encode(catalog(["zzz qqq"]))
    assert len(bags.ids) == 0 and bags.offsets.tolist() == [0] * (len(FEATURES) + 1)


def test_save_and_load_round_trip(tmp_path, small_world):
    vocab = build_vocabulary(small_world.catalog)
    vocab.save(tmp_path / "v.json")
    loaded = Vocabulary.load(tmp_path / "v.json")
    assert loaded.tokens == vocab.tokens
    a, b = vocab.encode(small_world.catalog), loaded.encode(small_world.catalog)
    assert np.array_equal(a.ids, b.ids) and np.array_equal(a.offsets, b.offsets)


def test_load_refuses_a_vocabulary_for_other_features(tmp_path):
    (tmp_path / "v.json").write_text('{"features": ["title"], "kinds": [], "tokens": {}}')
    with pytest.raises(ContractError, match="features"):
        Vocabulary.load(tmp_path / "v.json")
