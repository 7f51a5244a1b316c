"""Training examples from the engagement log: tasks, the held-out split, multi-task sampling.

A task is a (surface, engagement) pair named "surface/engagement". The held-out slice is
deterministic: a row is held out when a stable hash of (product_id, surface, engagement, ts) falls
in the lowest `fraction` of the hash range, whatever the file order. Training batches mix tasks:
a task's share of sampled examples is proportional to weight x count ** exponent (exponent 1 keeps
the log's natural mix, 0 makes tasks equally frequent; the default 0.5 lifts the sparse ones).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from itemsage_core.contracts.engagement_contract import ENGAGEMENTS, SURFACES
from itemsage_core.errors import ItemSageError

TASKS = tuple(f"{s}/{e}" for s in SURFACES for e in ENGAGEMENTS)
_HASH_KEY = "itemsage-holdout"  # 16 bytes, as pandas requires


def parse_tasks(spec: str) -> tuple[str, ...]:
    """'all', or a comma-separated list of tasks, surfaces or engagement types."""
    if spec.strip() == "all":
        return TASKS
    chosen = []
    for item in (part.strip() for part in spec.split(",")):
        matches = [t for t in TASKS if item == t or item in t.split("/")]
        if not matches:
            raise ItemSageError(
                f"unknown task '{item}': use 'all', a surface ({', '.join(SURFACES)}), "
                f"an engagement ({', '.join(ENGAGEMENTS)}) or surface/engagement"
            )
        chosen += [t for t in matches if t not in chosen]
    return tuple(t for t in TASKS if t in chosen)


def holdout_mask(engagements: pa.Table, fraction: float) -> np.ndarray:
    """True for the rows of the deterministic held-out slice."""
    frame = engagements.select(["product_id", "surface", "engagement", "ts"]).to_pandas()
    hashed = pd.util.hash_pandas_object(frame, index=False, hash_key=_HASH_KEY).to_numpy()
    return hashed < np.uint64(fraction * 2.0**64)


@dataclasses.dataclass
class Examples:
    """(query, engaged product) pairs: unit-length float32 queries, product = row in the
    ProductFeatures, task = TASKS index."""

    queries: np.ndarray
    products: np.ndarray
    tasks: np.ndarray

    def __len__(self) -> int:
        return len(self.products)

    def subset(self, mask: np.ndarray) -> Examples:
        return Examples(self.queries[mask], self.products[mask], self.tasks[mask])

    def task_counts(self) -> dict[str, int]:
        counts = np.bincount(self.tasks, minlength=len(TASKS))
        return {t: int(c) for t, c in zip(TASKS, counts) if c}


def task_ids(engagements: pa.Table) -> np.ndarray:
    names = pc.binary_join_element_wise(
        engagements.column("surface"), engagements.column("engagement"), "/"
    )
    return pc.index_in(names, value_set=pa.array(TASKS)).to_numpy(zero_copy_only=False)


def build_examples(engagements: pa.Table, catalog_ids: pa.Array) -> tuple[Examples, int]:
    """Examples of a validated engagement log whose products are in the catalog, and how many
    rows were left out because their product is not in the (valid) catalog."""
    where = pc.index_in(engagements.column("product_id"), value_set=catalog_ids)
    known = pc.is_valid(where).to_numpy(zero_copy_only=False)
    queries = pc.list_flatten(engagements.column("query_embedding")).to_numpy()
    queries = queries.astype(np.float32).reshape(engagements.num_rows, -1)
    queries /= np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    examples = Examples(
        queries=queries,
        products=pc.fill_null(where, -1).to_numpy().astype(np.int64),
        tasks=task_ids(engagements),
    )
    return examples.subset(known), int((~known).sum())


def _task_rates(counts: np.ndarray, weights: dict[str, float], exponent: float) -> np.ndarray:
    """Per task, a draw weight per example giving task t a share ~ weight_t * count_t**exponent."""
    counts = np.asarray(counts, np.float64)
    present = np.where(counts > 0, counts, 1.0)
    weight = np.array([weights.get(t, 1.0) for t in TASKS])
    share = np.where(counts > 0, weight * present**exponent, 0.0)
    return share / present


def task_probabilities(
    counts: np.ndarray, weights: dict[str, float], exponent: float
) -> np.ndarray:
    """Per task (TASKS order), the probability of drawing one given example of that task
    (`counts`: examples per task), as sampling_probabilities gives it to each example."""
    rates = _task_rates(counts, weights, exponent)
    return rates / float((rates * np.asarray(counts, np.float64)).sum())


def sampling_probabilities(
    tasks: np.ndarray, weights: dict[str, float], exponent: float
) -> np.ndarray:
    """Per-example probability of being drawn, giving task t a share ~ weight_t * count_t**exp."""
    rates = _task_rates(np.bincount(tasks, minlength=len(TASKS)), weights, exponent)
    per_example = rates[tasks]
    return per_example / per_example.sum()
