import numpy as np
import pyarrow as pa

from itemsage_core.features.text_tokens import tokenize, trigram_codes, trigram_text


def test_words_bigrams_and_trigrams_of_a_string_column():
    tokens = tokenize(pa.array(["Red Wool-Dress", None, "", "a"]))
    assert tokens.unigrams.to_pylist() == ["red", "wool", "dress", "a"]
    assert tokens.unigram_rows.tolist() == [0, 0, 0, 3]
    assert tokens.bigrams.to_pylist() == ["red wool", "wool dress"]
    assert tokens.bigram_rows.tolist() == [0, 0]
    assert trigram_text(tokens.trigrams) == [
        " re",
        "red",
        "ed ",
        " wo",
        "woo",
        "ool",
        "ol ",
        " dr",
        "dre",
        "res",
        "ess",
        "ss ",
        " a ",
    ]
    assert tokens.trigram_rows.tolist() == [0] * 12 + [3]


def test_list_items_are_separate_segments():
    tokens = tokenize(pa.array([["navy", "light blue"], None, [], ["x"]]))
    assert tokens.unigrams.to_pylist() == ["navy", "light", "blue", "x"]
    assert tokens.unigram_rows.tolist() == [0, 0, 0, 3]
    assert tokens.bigrams.to_pylist() == ["light blue"]  # never "navy light"
    assert "y l" not in trigram_text(tokens.trigrams)


def test_unicode_is_lowercased_and_kept_whole():
    tokens = tokenize(pa.array(["ÉTÉ naïve 東京 😀!"]))
    assert tokens.unigrams.to_pylist() == ["été", "naïve", "東京"]
    assert " 東京"[:3] in trigram_text(tokens.trigrams)
    assert trigram_codes(trigram_text(tokens.trigrams)).tolist() == tokens.trigrams.tolist()


def test_empty_input():
    tokens = tokenize(pa.array([], pa.string()))
    assert len(tokens.unigrams) == len(tokens.bigrams) == len(tokens.trigrams) == 0
    assert tokens.trigrams.dtype == np.uint64
