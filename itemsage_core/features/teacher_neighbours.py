"""The catalog objective's teachers: each product's nearest neighbours by a weighted sum of
similarities, TF-IDF cosine over the text (`tfidf`) and cosine of any dense feature (its name).

A teacher is a mix such as `{"tfidf": 0.5, "text_embedding": 0.5}`: the score of two products is
the weighted sum of their similarities (a product lacking a dense feature scores 0 on it). Lexical
similarity knows exact words and a pretrained sentence encoder knows synonyms and kinds; their sum
finds same-kind neighbours more often than either alone (docs/model.md, "Teachers").
"""

from __future__ import annotations

import numpy as np

from itemsage_core.errors import ItemSageError
from itemsage_core.features.lexical_neighbours import sparse_scores, tfidf_matrix, top_k

TFIDF = "tfidf"
DENSE_SHARE = 0.5  # the default teacher's weight on the dense features (docs/model.md)


def default_teacher(dense: list[str]) -> dict[str, float]:
    """TF-IDF alone without dense features; else TF-IDF and the dense features' mean, half
    and half (chosen by measurement on the Flipkart sample, docs/model.md)."""
    if not dense:
        return {TFIDF: 1.0}
    return {TFIDF: 1.0 - DENSE_SHARE, **{name: DENSE_SHARE / len(dense) for name in dense}}


def parse_teacher(text: str) -> tuple[tuple[str, float], ...]:
    """'tfidf=0.5,text_embedding=0.5' -> (("tfidf", 0.5), ("text_embedding", 0.5))."""
    mix = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition("=")
        try:
            mix.append((name.strip(), float(weight) if weight else 1.0))
        except ValueError:
            raise ItemSageError(f"--teacher {text}: '{weight}' is not a number") from None
    if not mix or any(w < 0 for _, w in mix) or sum(w for _, w in mix) <= 0:
        raise ItemSageError(
            f"--teacher {text}: give NAME=WEIGHT pairs (tfidf or a dense feature), weights >= 0 "
            "and not all 0"
        )
    return tuple(mix)


def check_teacher(mix: dict[str, float], dense: list[str]) -> None:
    """ItemSageError unless every part of the mix is tfidf or one of the dense features."""
    unknown = sorted(set(mix) - {TFIDF, *dense})
    if unknown:
        raise ItemSageError(
            f"--teacher: {', '.join(unknown)} is neither tfidf nor a dense feature of the "
            f"catalog ({', '.join(dense) or 'it declares none'})"
        )


def _unit_rows(values: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    return values / np.where(norms > 0, norms, 1.0)


def teacher_neighbours(
    texts: list[str], dense: dict[str, np.ndarray], mix: dict[str, float], k: int
) -> np.ndarray:
    """(n, k) rows of each product's k nearest neighbours by the mix's score, best first."""
    n = len(texts)
    k = min(k, n - 1)
    parts = []
    if mix.get(TFIDF, 0) > 0:
        parts.append((mix[TFIDF], sparse_scores(tfidf_matrix(texts))))
    for name, weight in mix.items():
        if name != TFIDF and weight > 0:
            unit = _unit_rows(dense[name].astype(np.float32, copy=False))
            parts.append((weight, lambda rows, unit=unit: unit[rows] @ unit.T))

    def scores_of(rows: np.ndarray) -> np.ndarray:
        return sum(weight * np.asarray(part(rows), np.float32) for weight, part in parts)

    return top_k(scores_of, np.arange(n), k, n)


def mutual_neighbours(near: np.ndarray) -> np.ndarray:
    """`near` (n, k) with every neighbour that does not also list the product among its own k
    replaced by -1, the mutual ones first (in their order): fewer positives, more often of the
    product's kind (docs/model.md, "Teachers")."""
    n, k = near.shape
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    keys = rows * n + near.ravel()
    back = near.ravel().astype(np.int64) * n + rows
    order = np.argsort(keys)
    found = np.searchsorted(keys, back, sorter=order)
    found = np.minimum(found, len(keys) - 1)
    mutual = (keys[order[found]] == back).reshape(n, k)
    first = np.argsort(~mutual, axis=1, kind="stable")
    return np.where(np.take_along_axis(mutual, first, 1), np.take_along_axis(near, first, 1), -1)
