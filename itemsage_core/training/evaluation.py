"""Offline evaluation: Recall@K of the engaged product among an index of catalog products.

Protocol (docs/model.md): the index is every valid catalog product, or, above `index_size`, a
fixed random sample of that many (seed 0) plus each example's engaged product. A held-out example's
rank is 1 + the number of other index products whose score (cosine with the query) is >= the
engaged product's: ties count against the model. Recall@K is the share of examples with rank <= K,
per task and over all held-out examples. `evaluate_prepared` follows it on prepared data, streamed.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch

from itemsage_core.contracts.catalog_contract import PRODUCT_ID
from itemsage_core.errors import ItemSageError
from itemsage_core.features.product_features import ProductFeatures
from itemsage_core.model.encoder import ItemSageEncoder
from itemsage_core.model.inference import embed_features
from itemsage_core.storage.parquet_io import open_parquet
from itemsage_core.training.config import HELDOUT_INDEX_SIZE, RECALL_K
from itemsage_core.training.prepared_data import (
    QUERY,
    TASK,
    prepared_files,
    read_prepared_manifest,
)
from itemsage_core.training.streaming import EVALUATION, features_of, row_groups, tagged_rng
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
    return _recall(hit, examples.tasks, k, len(index_products))


def _recall(hit: np.ndarray, tasks: np.ndarray, k: int, index_size: int) -> Evaluation:
    """Recall@k per task and overall from each example's hit."""
    per_task, counts = {}, {}
    for t, task in enumerate(TASKS):
        mask = tasks == t
        if mask.any():
            per_task[task], counts[task] = float(hit[mask].mean()), int(mask.sum())
    return Evaluation(
        k=k,
        index_size=index_size,
        examples=len(hit),
        overall=float(hit.mean()) if len(hit) else 0.0,
        per_task=per_task,
        task_examples=counts,
    )


def evaluate_prepared(
    model: ItemSageEncoder,
    data_dir: str,
    k: int = RECALL_K,
    index_size: int = HELDOUT_INDEX_SIZE,
    device=torch.device("cpu"),
) -> Evaluation:
    """`evaluate`'s protocol on prepared data (`itemsage prepare-training`): the held-out
    examples against the product shards, both read row group by row group. Above `index_size`
    products the index is a random sample (each product kept with probability index_size / n)
    plus every engaged product, so memory is bounded by the index, not by the catalog or the
    log."""
    manifest = read_prepared_manifest(data_dir)
    products, image_dim = manifest["counts"]["valid_products"], manifest["options"]["image_dim"]
    heldout = prepared_files(data_dir, manifest, "heldout")
    columns = [open_parquet(path).read([PRODUCT_ID]) for path in heldout]
    engaged = pc.unique(pa.concat_tables(columns).column(PRODUCT_ID))
    keep, rng = min(1.0, index_size / max(products, 1)), tagged_rng(0, EVALUATION)
    ids, vectors = [], []
    for rows in row_groups(prepared_files(data_dir, manifest, "products"), rng):
        chosen = rng.random(rows.num_rows) < keep
        if keep < 1:
            chosen |= pc.is_in(rows.column(PRODUCT_ID), engaged).to_numpy()
        rows = rows.filter(pa.array(chosen))
        ids.append(rows.column(PRODUCT_ID).to_numpy(zero_copy_only=False))
        vectors.append(embed_features(model, features_of(rows, image_dim), device=device))
    index_ids, index = pd.Index(np.concatenate(ids)), np.concatenate(vectors)
    hits, tasks = [], []
    for path in heldout:
        examples = open_parquet(path)
        for group in range(examples.num_row_groups):
            rows = examples.read_row_group(group)
            positive_rows = index_ids.get_indexer(rows.column(PRODUCT_ID).to_numpy(False))
            if (positive_rows < 0).any():
                raise ItemSageError(f"{path} engages a product that {data_dir} does not hold")
            queries = np.array(rows.column(QUERY).combine_chunks().flatten(), np.float32)
            queries = queries.reshape(rows.num_rows, -1)
            hits.append(ranks(queries, index, positive_rows) <= k)
            tasks.append(rows.column(TASK).to_numpy())
    hit, task = np.concatenate([np.zeros(0, bool), *hits]), np.concatenate([[], *tasks])
    return _recall(hit, task, k, len(index_ids))
