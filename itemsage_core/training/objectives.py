"""An objective is a task's loss on the batches of one source: what the training loop
(trainer.train_objectives) asks of it is the `Objective` protocol.

Two tasks, each loss written once: engagements (`ExampleBatch.loss`, mixed negatives with logQ)
and catalog pairs (`PairBatch.loss`, two views of a product and its partner, symmetric). Two
kinds of `BatchSource` feed them: arrays in memory (memory_batches.py) and prepared shards
streamed with bounded memory (streamed_batches.py); `SourcedObjective` pairs a source with the
objective's weight. Which objectives a run trains is config.objective_weights.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Protocol

import torch
from numpy.random import Generator

from itemsage_core.features.product_features import ProductBatch
from itemsage_core.model.encoder import ItemSageEncoder
from itemsage_core.model.inference import autocast
from itemsage_core.model.losses import LossParts, mixed_negative_loss, symmetric_pair_loss
from itemsage_core.training.catalog_views import view_pairs
from itemsage_core.training.config import TrainConfig


class Objective(Protocol):
    """What the training loop asks of an objective."""

    name: str  # its loss's name in the history
    weight: float  # its weight in a step's loss
    batch: int  # examples a step

    def __len__(self) -> int:
        """Examples an epoch."""

    def describe(self) -> str:
        """What it trains on, for the progress line."""

    def steps_per_epoch(self) -> int: ...

    def position(self) -> dict:
        """Where its batches are, beyond the trainer's RNG (saved with the train state)."""

    def restore(self, position: dict) -> None:
        """Go on from a `position` (an exact resume)."""

    def loss(self, model: ItemSageEncoder, rng: Generator) -> LossParts:
        """The loss of its next batch (random draws from `rng`)."""


def _vectors(model: ItemSageEncoder, inputs: ProductBatch, precision: str) -> torch.Tensor:
    """The model's vectors (float32) of `inputs`, computed on the model's device."""
    dev = next(model.parameters()).device
    with autocast(dev, precision):
        return model(inputs.to(dev)).float()


@dataclasses.dataclass
class _Batch:
    """A batch's encoder inputs, on the CPU, and the keys that tell its products apart: a copy
    of a positive among the random negatives (same key) is not counted as a negative."""

    inputs: ProductBatch
    keys: torch.Tensor  # (b,) the positives' products
    negative_keys: torch.Tensor  # the random negatives' products


@dataclasses.dataclass
class ExampleBatch(_Batch):
    """Engagement examples (inputs: the positives', then the negatives') and their queries."""

    queries: torch.Tensor  # (b, query_dim), unit length
    log_q: torch.Tensor  # (b,) log of each positive's sampling probability (logQ correction)

    def loss(self, model: ItemSageEncoder, rng: Generator, config: TrainConfig) -> LossParts:
        """The engagement objective: in-batch and random negatives, logQ-corrected."""
        b = len(self.keys)
        vectors = _vectors(model, self.inputs, config.precision)
        dev = vectors.device
        return mixed_negative_loss(
            self.queries.to(dev),
            vectors[:b],
            self.keys.to(dev),
            self.log_q.to(dev),
            vectors[b:],
            self.negative_keys.to(dev),
            model.temperature,
        )


@dataclasses.dataclass
class PairBatch(_Batch):
    """Catalog pairs, a product and its partner (a teacher's neighbour, or itself): inputs are
    the products', their partners', then the negatives'."""

    partner_keys: torch.Tensor  # (b,) the partners' products

    def loss(self, model: ItemSageEncoder, rng: Generator, config: TrainConfig) -> LossParts:
        """The catalog objective: random views of each pair (catalog_views.py) pulled together
        against the batch's other products and the negatives, each way round."""
        b = len(self.keys)
        same = (self.keys == self.partner_keys).numpy()  # a pair of one product: split its units
        viewed = view_pairs(self.inputs, b, rng, config.views, same=same)
        vectors = _vectors(model, viewed, config.precision)
        dev = vectors.device
        # Each way round, negatives that are the positive's own product are masked.
        return symmetric_pair_loss(
            vectors[:b],
            vectors[b : 2 * b],
            self.keys.to(dev),
            self.partner_keys.to(dev),
            vectors[2 * b :],
            self.negative_keys.to(dev),
            model.temperature,
        )


class BatchSource(Protocol):
    """Where an objective's batches come from (in memory or streamed)."""

    name: str  # the objective its batches are for (config.ENGAGEMENTS or config.CATALOG)
    batch: int

    def __len__(self) -> int: ...

    def describe(self) -> str: ...

    def position(self) -> dict: ...

    def restore(self, position: dict) -> None: ...

    def draw(self, rng: Generator) -> ExampleBatch | PairBatch:
        """The next batch, random choices from `rng` (the trainer's)."""


@dataclasses.dataclass
class SourcedObjective:
    """An Objective: the loss of its source's batches, weighted."""

    source: BatchSource
    weight: float
    config: TrainConfig

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def batch(self) -> int:
        return self.source.batch

    def __len__(self) -> int:
        return len(self.source)

    def describe(self) -> str:
        return self.source.describe()

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.source) / self.source.batch)

    def position(self) -> dict:
        return self.source.position()

    def restore(self, position: dict) -> None:
        self.source.restore(position)

    def loss(self, model: ItemSageEncoder, rng: Generator) -> LossParts:
        return self.source.draw(rng).loss(model, rng, self.config)
