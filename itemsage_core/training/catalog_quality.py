"""How good are a model's embeddings of a catalog, without an engagement log?

Label agreement: for a fixed random sample of query products (seed 0), the share of each one's
top-k neighbours (exact cosine over every labelled valid product, the query itself left out) that
share its label, averaged over the queries. A hierarchical label (`A > B > C`) is also scored on
its first level. Rankers over the same products and the same text features:

- the model's embeddings;
- TF-IDF over the mapped text features joined (lexical_neighbours.py: word unigrams and bigrams,
  sublinear tf, scikit-learn's defaults otherwise): the obvious lexical baseline;
- any pretrained baselines the caller passes (`baselines`: a name and a function from the
  products' text, feature_text's, to unit vectors), e.g. a sentence encoder over the same text;
- random neighbours: the expected share, (products with the query's label - 1) / (products - 1).

Features named in `exclude` are withheld from the model and from TF-IDF alike, so the label's
own column can be left out of the inputs. Plus the model's vocabulary coverage of the catalog's
text (vocab_coverage.py). Ties among equal scores are broken by catalog order for every ranker.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from itemsage_core.contracts.catalog_contract import (
    TEXT_FEATURES,
    require_text_features,
    validate_catalog,
)
from itemsage_core.errors import ItemSageError
from itemsage_core.features.lexical_neighbours import (
    feature_text,
    sparse_scores,
    tfidf_matrix,
    top_k,
)
from itemsage_core.features.product_features import encode_products
from itemsage_core.features.vocab_coverage import coverage_summary
from itemsage_core.features.vocabulary import Vocabulary
from itemsage_core.model.encoder import ItemSageEncoder
from itemsage_core.model.inference import embed_features
from itemsage_core.training.config import CATALOG_QUERIES, RECALL_K

LEVEL_SEPARATOR = ">"
Baseline = Callable[[list[str]], np.ndarray]  # texts -> (n, dim) unit vectors


@dataclasses.dataclass
class CatalogQuality:
    label_column: str
    products: int
    queries: int
    k: int
    excluded: tuple[str, ...]
    features: tuple[str, ...]
    agreement: dict[str, dict[str, float]]  # label level -> ranker -> share
    coverage: dict

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def lines(self) -> list[str]:
        rankers = list(next(iter(self.agreement.values())))
        width = max(10, *(len(r) + 2 for r in rankers))
        out = [
            f"share of top-{self.k} neighbours sharing the query's {self.label_column}: "
            f"{self.queries} queries among {self.products} labelled products; features "
            f"{', '.join(self.features)}"
            + (f" ({', '.join(self.excluded)} withheld)" if self.excluded else ""),
            f"  {'label':<14}" + "".join(f"{r:>{width}}" for r in rankers),
        ]
        for level, scores in self.agreement.items():
            out.append(f"  {level:<14}" + "".join(f"{scores[r]:>{width}.3f}" for r in rankers))
        cov = self.coverage
        if cov["word_coverage"] is not None:
            per = ", ".join(f"{f} {s:.0%}" for f, s in cov["per_feature"].items())
            out.append(
                f"vocabulary coverage: {cov['word_coverage']:.1%} of the catalog's words ({per})"
            )
        return out


def label_levels(labels: list[str | None]) -> dict[str, np.ndarray]:
    """Integer codes (-1: no label) of the label and, when hierarchical, of its first level."""
    parts = [
        None if v is None else [p.strip() for p in v.split(LEVEL_SEPARATOR) if p.strip()]
        for v in labels
    ]
    full = [" > ".join(p) if p else None for p in parts]
    levels = {"full path" if any(p and len(p) > 1 for p in parts) else "label": full}
    if "full path" in levels:
        levels = {"top level": [p[0] if p else None for p in parts], **levels}
    return {name: _codes(values) for name, values in levels.items()}


def _codes(values: list[str | None]) -> np.ndarray:
    index: dict[str, int] = {}
    return np.array(
        [-1 if v is None else index.setdefault(v, len(index)) for v in values], np.int64
    )


def agreement(neighbours: np.ndarray, codes: np.ndarray, queries: np.ndarray) -> float:
    """Mean share of each query's neighbours that share its code."""
    return float((codes[neighbours] == codes[queries][:, None]).mean())


def random_agreement(codes: np.ndarray, queries: np.ndarray) -> float:
    """Expected agreement of neighbours drawn uniformly from the other products."""
    counts = np.bincount(codes)
    return float(((counts[codes[queries]] - 1) / (len(codes) - 1)).mean())


def dense_scores(vectors: np.ndarray):
    """A `scores_of` for cosine over unit vectors."""
    index = torch.from_numpy(vectors)
    return lambda rows: (index[torch.from_numpy(rows)] @ index.T).numpy()


def labelled_products(
    catalog: pa.Table, label_column: str, image_dim: int, exclude: tuple[str, ...]
) -> pa.Table:
    """The valid products of a mapped catalog that have a label, the excluded features blanked."""
    if label_column not in catalog.column_names:
        raise ItemSageError(
            f"label column '{label_column}' is not in the catalog (after the "
            f"mapping); columns: {', '.join(catalog.column_names)}"
        )
    require_text_features(exclude)
    valid = validate_catalog(catalog, image_dim).valid
    label = valid.column(label_column).cast(pa.string())
    labelled = pc.invert(
        pc.or_kleene(pc.is_null(label), pc.equal(pc.utf8_trim_whitespace(label), ""))
    )
    valid, labels = valid.filter(labelled), label.filter(labelled).to_pylist()
    for feature in exclude:
        where = valid.column_names.index(feature)
        valid = valid.set_column(
            where, feature, pa.nulls(valid.num_rows, valid.schema.field(feature).type)
        )
    return valid, labels


def evaluate_catalog(
    model: ItemSageEncoder,
    vocab: Vocabulary,
    catalog: pa.Table,
    label_column: str,
    image_dim: int,
    exclude: tuple[str, ...] = (),
    queries: int = CATALOG_QUERIES,
    k: int = RECALL_K,
    seed: int = 0,
    baselines: dict[str, Baseline] | None = None,
) -> CatalogQuality:
    """Label agreement of the model, TF-IDF, the `baselines` and random neighbours, and
    vocabulary coverage."""
    products, labels = labelled_products(catalog, label_column, image_dim, exclude)
    n = products.num_rows
    if n <= k:
        raise ItemSageError(
            f"only {n} valid products have a '{label_column}': need more than "
            f"k = {k} to rank neighbours"
        )
    features = [f for f in TEXT_FEATURES if f not in exclude and products.column(f).null_count < n]
    encoded = encode_products(products, vocab, image_dim, model.config.dense_dims)
    vectors = embed_features(model, encoded)
    texts = feature_text(products, features)
    picked = np.sort(np.random.default_rng(seed).choice(n, size=min(queries, n), replace=False))
    levels = label_levels(labels)
    model_nb = top_k(dense_scores(vectors), picked, k, n)
    ranked = {
        "itemsage": model_nb,
        "tfidf": top_k(sparse_scores(tfidf_matrix(texts)), picked, k, n),
        **{
            name: top_k(dense_scores(np.asarray(embed(texts), np.float32)), picked, k, n)
            for name, embed in (baselines or {}).items()
        },
    }
    scores = {
        level: {
            **{name: agreement(nb, codes, picked) for name, nb in ranked.items()},
            "random": random_agreement(codes, picked),
        }
        for level, codes in levels.items()
    }
    coverage = coverage_summary(encoded.bags.coverage)
    coverage["per_feature"] = {f: s for f, s in coverage["per_feature"].items() if f in features}
    return CatalogQuality(
        label_column=label_column,
        products=n,
        queries=len(picked),
        k=k,
        excluded=tuple(exclude),
        features=tuple(features),
        agreement=scores,
        coverage=coverage,
    )
