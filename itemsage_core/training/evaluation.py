"""Offline evaluation: Recall@K of the engaged product among an index of catalog products.

Protocol (docs/model.md): the index is every valid catalog product, or, above `index_size`, a
fixed random sample of that many (seed 0) plus each example's engaged product. A held-out example's
rank is 1 + the number of other index products whose score (cosine with the query) is >= the
engaged product's: ties count against the model. Recall@K is the share of examples with rank <= K,
per task and over all held-out examples.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from itemsage_core.features.product_features import ProductFeatures
from itemsage_core.model.encoder import ItemSageEncoder
from itemsage_core.model.inference import embed_features
from itemsage_core.training.config import HELDOUT_INDEX_SIZE, RECALL_K
from itemsage_core.training.training_examples import TASKS, Examples

QUERY_CHUNK = 2048


@dataclasses.dataclass
class Evaluation:
    k: int
    index_size: int
    examples: int
    overall: float
    per_task: dict[str, float]
    task_examples: dict[str, int]

    def to_dict(self) -> dict:
        return {"metric": f"recall@{self.k}", **dataclasses.asdict(self)}

    def lines(self) -> list[str]:
        out = [
            (
                f"recall@{self.k} over {self.examples} held-out examples, "
                f"index of {self.index_size} products"
            ),
            f"  {'overall':<22} {self.overall:.4f}",
        ]
        out += [
            f"  {task:<22} {value:.4f}  ({self.task_examples[task]} examples)"
            for task, value in self.per_task.items()
        ]
        return out


def ranks(queries: np.ndarray, index: np.ndarray, positive_rows: np.ndarray) -> np.ndarray:
    """Rank of each query's positive (row of `index`) among all index rows, ties counted against."""
    out = np.empty(len(queries), np.int64)
    index_t = torch.from_numpy(index)
    for start in range(0, len(queries), QUERY_CHUNK):
        q = torch.from_numpy(queries[start : start + QUERY_CHUNK])
        scores = q @ index_t.T
        rows = torch.from_numpy(positive_rows[start : start + QUERY_CHUNK])
        positive = scores.gather(1, rows[:, None])
        out[start : start + len(q)] = (scores >= positive).sum(1).numpy()  # includes itself
    return out


def evaluate(
    model: ItemSageEncoder,
    features: ProductFeatures,
    examples: Examples,
    k: int = RECALL_K,
    index_size: int = HELDOUT_INDEX_SIZE,
    device=torch.device("cpu"),
) -> Evaluation:
    """Recall@k per task and overall for held-out `examples` (protocol in the module docstring)."""
    n = len(features)
    if n <= index_size:
        index_products = np.arange(n)
    else:
        sample = np.random.default_rng(0).choice(n, size=index_size, replace=False)
        index_products = np.union1d(sample, examples.products)
    index = embed_features(model, features, index_products, device=device)
    positive_rows = np.searchsorted(index_products, examples.products)
    hit = ranks(examples.queries, index, positive_rows) <= k
    per_task, counts = {}, {}
    for t, task in enumerate(TASKS):
        mask = examples.tasks == t
        if mask.any():
            per_task[task], counts[task] = float(hit[mask].mean()), int(mask.sum())
    return Evaluation(
        k=k,
        index_size=len(index_products),
        examples=len(examples),
        overall=float(hit.mean()) if len(hit) else 0.0,
        per_task=per_task,
        task_examples=counts,
    )
