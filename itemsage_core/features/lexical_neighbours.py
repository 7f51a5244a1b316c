"""TF-IDF over a catalog's text features, and exact top-k neighbours by any score (`top_k`).

The text of a product is its text features, normalised as the tokeniser does (text_tokens.py),
joined by spaces; TF-IDF is scikit-learn's over word unigrams and bigrams with sublinear tf.
It is the lexical baseline of `evaluate-catalog` and the lexical teacher of the catalog
objective's neighbour positives (teacher_neighbours.py).

`term_counts` gives the same terms per product as rows, so that TF-IDF and the neighbours can be
computed on Spark (jobs/lexical_neighbours.py) with scikit-learn's formulas: a term's weight is
(1 + ln tf) x (ln((1 + n) / (1 + df)) + 1), each product's weights scaled to unit length.
"""

from __future__ import annotations

import collections

import numpy as np
import pyarrow as pa

from itemsage_core.features.text_tokens import segments

CHUNK = 1024
CHUNK_CELLS = 1 << 24  # scores held at once (64 MB of float32)
DEFAULT_NEIGHBOURS = 20  # the catalog objective's partners per product (docs/model.md)


def feature_text(table: pa.Table | pa.RecordBatch, features: list[str]) -> list[str]:
    """Each row's text features, normalised as the tokeniser does, joined by spaces."""
    columns = []
    for feature in features:
        column = table.column(feature)
        normal, rows = segments(
            column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        )
        joined = [[] for _ in range(table.num_rows)]
        for row, text in zip(rows.tolist(), normal.to_pylist()):
            if text:
                joined[row].append(text)
        columns.append([" ".join(parts) for parts in joined])
    return [" ".join(p for p in parts if p) for parts in zip(*columns)]


TERM_COUNTS_SCHEMA = pa.schema(
    [pa.field("product_id", pa.string()), pa.field("term", pa.string()), pa.field("tf", pa.int32())]
)


def _vectorizer():
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)


def term_counts(table: pa.Table | pa.RecordBatch, features: list[str]) -> pa.Table:
    """TERM_COUNTS_SCHEMA rows: each product's TF-IDF terms (as tfidf_matrix analyses its
    text) with their counts."""
    analyse = _vectorizer().build_analyzer()
    ids, terms, counts = [], [], []
    for product, text in zip(table.column("product_id").to_pylist(), feature_text(table, features)):
        for term, count in collections.Counter(analyse(text)).items():
            ids.append(product)
            terms.append(term)
            counts.append(count)
    return pa.Table.from_arrays(
        [pa.array(ids, pa.string()), pa.array(terms, pa.string()), pa.array(counts, pa.int32())],
        schema=TERM_COUNTS_SCHEMA,
    )


def tfidf_matrix(texts: list[str]):
    """(n, terms) sparse TF-IDF rows, unit length (empty texts give zero rows)."""
    try:
        return _vectorizer().fit_transform(texts)
    except ValueError:  # no text at all: every product is a zero row
        from scipy.sparse import csr_matrix

        return csr_matrix((len(texts), 1))


def _best(scores: np.ndarray, k: int) -> np.ndarray:
    """Columns of the k best scores of each row, best first, ties broken by column order (as a
    stable sort of the whole row would), in O(n) per row plus the tied candidates."""
    if k >= scores.shape[1]:
        return np.argsort(-scores, axis=1, kind="stable")[:, :k]
    kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1 : k]
    out = np.empty((len(scores), k), np.int64)
    for i, row in enumerate(scores):
        candidates = np.flatnonzero(row >= kth[i])
        out[i] = candidates[np.argsort(-row[candidates], kind="stable")[:k]]
    return out


def top_k(scores_of, queries: np.ndarray, k: int, n: int) -> np.ndarray:
    """(q, k) neighbour rows of each query row among `n`, best first, the query itself left
    out, ties broken by row order; `scores_of(rows)` gives the (len(rows), n) scores."""
    chunk = max(1, min(CHUNK, CHUNK_CELLS // max(n, 1)))
    out = [np.zeros((0, k), np.int64)]
    for start in range(0, len(queries), chunk):
        rows = queries[start : start + chunk]
        scores = np.asarray(scores_of(rows), np.float32)
        scores[np.arange(len(rows)), rows] = -np.inf
        out.append(_best(scores, k))
    return np.concatenate(out)


def sparse_scores(matrix):
    """A `scores_of` for cosine over the unit rows of a sparse matrix."""
    transposed = matrix.T.tocsr()
    return lambda rows: (matrix[rows] @ transposed).toarray()
