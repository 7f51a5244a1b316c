"""Vectorised tokenisation of text features into word unigrams, word bigrams and char trigrams.

Text is lower-cased and every run of characters that are not letters or digits becomes one word
boundary. A string feature is one segment; a list feature (colors, links, ...) is one segment per
item, so bigrams and trigrams never cross items. Word tokens stay Arrow strings; a character
trigram is a 63-bit code of three code points, with a space marking word boundaries (so the word
"red" gives " re", "red", "ed "). Every step is an Arrow or NumPy kernel over the whole batch.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

KINDS = ("unigram", "bigram", "trigram")
NON_WORD = r"[^\p{L}\p{N}]+"
_SPACE = 32
_CODE_BITS = 21  # Unicode code points fit in 21 bits


@dataclasses.dataclass
class FeatureTokens:
    """The tokens of one feature over a batch; `*_rows` give each token's row in the batch."""

    unigrams: pa.Array
    unigram_rows: np.ndarray
    bigrams: pa.Array
    bigram_rows: np.ndarray
    trigrams: np.ndarray  # uint64 codes
    trigram_rows: np.ndarray


def segments(column: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Normalised text segments of a string or list<string> column and the row of each."""
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        rows = pc.list_parent_indices(column).to_numpy()
        texts = pc.list_flatten(column)
    else:
        rows = np.arange(len(column))
        texts = column
    texts = pc.fill_null(texts.cast(pa.string()), "")
    spaced = pc.replace_substring_regex(pc.utf8_lower(texts), NON_WORD, " ")
    normal = pc.utf8_trim_whitespace(spaced)
    return normal, rows.astype(np.int64)


def _words(normal: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """The non-empty words of the segments and the segment of each."""
    split = pc.utf8_split_whitespace(normal)
    words = pc.list_flatten(split)
    segment = pc.list_parent_indices(split).to_numpy()
    keep = pc.greater(pc.binary_length(words), 0)
    return pc.filter(words, keep), segment[keep.to_numpy(zero_copy_only=False)]


def _pack(first: np.ndarray, middle: np.ndarray, last: np.ndarray) -> np.ndarray:
    """One uint64 code per trigram of code points (the inverse is trigram_text)."""
    return (first << np.uint64(2 * _CODE_BITS)) | (middle << np.uint64(_CODE_BITS)) | last


def _trigram_codes(normal: pa.Array, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Trigram codes of every word of every segment, with the row of each."""
    if len(normal) == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    # One string for the whole batch, segments separated by NUL (no segment contains one).
    whole = pa.ListArray.from_arrays(pa.array([0, len(normal)], pa.int32()), normal)
    joined = pc.binary_join(whole, "\x00")[0]
    text = "\x00" + joined.as_buffer().to_pybytes().decode("utf-8", "replace") + "\x00"
    cp = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    segment = np.cumsum(cp == 0) - 1
    boundary = np.where(cp == 0, _SPACE, cp)
    middle = np.flatnonzero((cp != 0) & (cp != _SPACE))
    codes = _pack(boundary[middle - 1], cp[middle], boundary[middle + 1])
    return codes, rows[segment[middle]]


def tokenize(column: pa.Array) -> FeatureTokens:
    """Unigrams, bigrams (adjacent words of one segment) and trigram codes of a column."""
    normal, rows = segments(column)
    words, word_segment = _words(normal)
    same = word_segment[:-1] == word_segment[1:]
    if len(words) > 1:
        pairs = pc.binary_join_element_wise(words[:-1], words[1:], " ")
        bigrams = pc.filter(pairs, pa.array(same))
        bigram_rows = rows[word_segment[:-1][same]]
    else:
        bigrams, bigram_rows = pa.array([], pa.string()), np.zeros(0, np.int64)
    trigrams, trigram_rows = _trigram_codes(normal, rows)
    return FeatureTokens(
        unigrams=words,
        unigram_rows=rows[word_segment],
        bigrams=bigrams,
        bigram_rows=bigram_rows,
        trigrams=trigrams,
        trigram_rows=trigram_rows,
    )


def trigram_text(codes: np.ndarray) -> list[str]:
    """The three characters of each trigram code (for vocabulary files)."""
    mask = np.uint64((1 << _CODE_BITS) - 1)
    parts = [(codes >> np.uint64(shift)) & mask for shift in (2 * _CODE_BITS, _CODE_BITS, 0)]
    return ["".join(map(chr, triple)) for triple in zip(*(p.tolist() for p in parts))]


def trigram_codes(texts: list[str]) -> np.ndarray:
    """Inverse of `trigram_text`."""
    if not texts:
        return np.zeros(0, np.uint64)
    cp = np.frombuffer("".join(texts).encode("utf-32-le"), np.uint32).astype(np.uint64)
    cp = cp.reshape(-1, 3)
    return _pack(cp[:, 0], cp[:, 1], cp[:, 2])
