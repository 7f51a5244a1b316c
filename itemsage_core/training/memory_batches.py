"""Batch sources over arrays in memory (objectives.BatchSource): engagement examples drawn by
their tasks' sampling probabilities, and catalog products drawn uniformly, each paired with one
of its teacher's neighbours or itself. Every draw comes from the trainer's RNG, saved with the
train state, so they keep no position of their own."""

from __future__ import annotations

import numpy as np
import torch

from itemsage_core.features.product_features import ProductFeatures
from itemsage_core.training.config import CATALOG, ENGAGEMENTS, TrainConfig
from itemsage_core.training.objectives import ExampleBatch, PairBatch
from itemsage_core.training.training_examples import Examples, sampling_probabilities


class _InMemory:
    """No position beyond the trainer's RNG."""

    def position(self) -> dict:
        return {}

    def restore(self, position: dict) -> None:
        pass


class ExampleBatches(_InMemory):
    """Engagement examples, each drawn with its task's probability (training_examples
    .sampling_probabilities), with `random_negatives` products drawn uniformly; logQ exact."""

    name = ENGAGEMENTS

    def __init__(self, features: ProductFeatures, examples: Examples, config: TrainConfig):
        self.features, self.examples, self.config = features, examples, config
        self.probabilities = sampling_probabilities(
            examples.tasks, dict(config.task_weights), config.task_exponent
        )
        product_q = np.bincount(
            examples.products, weights=self.probabilities, minlength=len(features)
        )
        self.log_q = torch.from_numpy(np.log(np.maximum(product_q, 1e-12)).astype(np.float32))
        self.batch = min(config.batch_size, len(examples))

    def __len__(self) -> int:
        return len(self.examples)

    def describe(self) -> str:
        return f"{len(self.examples)} engagement examples ({self.examples.task_counts()})"

    def draw(self, rng: np.random.Generator) -> ExampleBatch:
        pick = rng.choice(len(self.examples), size=self.batch, p=self.probabilities)
        positives = self.examples.products[pick]
        negatives = rng.integers(len(self.features), size=self.config.random_negatives)
        keys = torch.from_numpy(positives)
        return ExampleBatch(
            inputs=self.features.batch(np.concatenate([positives, negatives])),
            queries=torch.from_numpy(self.examples.queries[pick]),
            keys=keys,
            log_q=self.log_q[keys],
            negative_keys=torch.from_numpy(negatives),
        )


class CatalogBatches(_InMemory):
    """Catalog products drawn uniformly (no logQ needed), each paired with one of its
    `neighbours` (n, k; -1 past a product's last one, when mutual) with probability
    `neighbour_share`, else with itself; `random_negatives` products drawn uniformly."""

    name = CATALOG

    def __init__(
        self, features: ProductFeatures, config: TrainConfig, neighbours: np.ndarray | None = None
    ):
        self.features, self.config = features, config
        self.batch = min(config.batch_size, len(features))
        self.neighbours = neighbours
        self.counts = (neighbours >= 0).sum(axis=1) if neighbours is not None else None

    def __len__(self) -> int:
        return len(self.features)

    def describe(self) -> str:
        partner = (
            f"{self.config.neighbour_share:.0%} of them paired with one of their "
            f"{self.neighbours.shape[1]} teacher neighbours"
            if self.neighbours is not None
            else "two views of each"
        )
        return f"{len(self.features)} catalog products ({partner})"

    def draw(self, rng: np.random.Generator) -> PairBatch:
        b, n = self.batch, len(self.features)
        picks = rng.choice(n, size=b, replace=False)
        negatives = rng.integers(n, size=self.config.random_negatives)
        partners = picks.copy()
        if self.neighbours is not None:
            swap = rng.random(b) < self.config.neighbour_share
            k = self.neighbours.shape[1]
            if self.counts.min() == k:
                column = rng.integers(k, size=b)
            else:  # a product without neighbours pairs with itself
                counts = self.counts[picks]
                column = np.minimum((rng.random(b) * counts).astype(np.int64), k - 1)
                swap &= counts > 0
            choice = self.neighbours[picks, column]
            partners[swap] = choice[swap]
        return PairBatch(
            inputs=self.features.batch(np.concatenate([picks, partners, negatives])),
            keys=torch.from_numpy(picks),
            partner_keys=torch.from_numpy(partners),
            negative_keys=torch.from_numpy(negatives),
        )
