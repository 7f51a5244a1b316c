"""TF-IDF over a catalog's text features, and each product's nearest lexical neighbours.

The text of a product is its text features, normalised as the tokeniser does (text_tokens.py),
joined by spaces; TF-IDF is scikit-learn's over word unigrams and bigrams with sublinear tf.
It is the lexical baseline of `evaluate-catalog` and the source of the catalog objective's
neighbour positives (trainer.CatalogObjective).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from itemsage_core.text_tokens import segments

CHUNK = 1024
DEFAULT_NEIGHBOURS = 10  # the catalog objective's partners per product (docs/model.md)


def feature_text(table: pa.Table | pa.RecordBatch, features: list[str]) -> list[str]:
    """Each row's text features, normalised as the tokeniser does, joined by spaces."""
    columns = []
    for feature in features:
        column = table.column(feature)
        normal, rows = segments(column.combine_chunks() if isinstance(column, pa.ChunkedArray)
                                else column)
        joined = [[] for _ in range(table.num_rows)]
        for row, text in zip(rows.tolist(), normal.to_pylist()):
            if text:
                joined[row].append(text)
        columns.append([" ".join(parts) for parts in joined])
    return [" ".join(p for p in parts if p) for parts in zip(*columns)]


def tfidf_matrix(texts: list[str]):
    """(n, terms) sparse TF-IDF rows, unit length (empty texts give zero rows)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    try:
        return TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit_transform(texts)
    except ValueError:  # no text at all: every product is a zero row
        from scipy.sparse import csr_matrix

        return csr_matrix((len(texts), 1))


def top_k(scores_of, queries: np.ndarray, k: int) -> np.ndarray:
    """(q, k) neighbour rows of each query row, best first, the query itself left out, ties
    broken by row order; `scores_of(rows)` gives the (len(rows), n) scores of those rows."""
    out = []
    for start in range(0, len(queries), CHUNK):
        rows = queries[start:start + CHUNK]
        scores = np.asarray(scores_of(rows), np.float64)
        scores[np.arange(len(rows)), rows] = -np.inf
        out.append(np.argsort(-scores, axis=1, kind="stable")[:, :k])
    return np.concatenate(out) if out else np.zeros((0, k), np.int64)


def sparse_scores(matrix):
    """A `scores_of` for cosine over the unit rows of a sparse matrix."""
    transposed = matrix.T.tocsr()
    return lambda rows: (matrix[rows] @ transposed).toarray()


def lexical_neighbours(texts: list[str], k: int) -> np.ndarray:
    """(n, k) rows of each product's k nearest neighbours by TF-IDF cosine."""
    k = min(k, len(texts) - 1)
    return top_k(sparse_scores(tfidf_matrix(texts)), np.arange(len(texts)), k)
