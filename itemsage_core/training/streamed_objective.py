"""The engagement objective over prepared data streamed from its shards (training/streaming.py):
the same mixed-negative loss and logQ correction as trainer.EngagementObjective, with positives
from the stream and random negatives from a bounded pool, so that memory does not grow with the
catalog or the log. It plugs into the trainer's one training loop (trainer.train_objectives)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from itemsage_core.errors import ItemSageError
from itemsage_core.model.encoder import ItemSageEncoder
from itemsage_core.model.inference import autocast
from itemsage_core.model.losses import LossParts, mixed_negative_loss
from itemsage_core.training.config import StreamConfig, TrainConfig
from itemsage_core.training.prepared_data import QUERY, read_prepared_manifest, task_count_vector
from itemsage_core.training.streaming import (
    features_of,
    log_q,
    negative_pool,
    row_groups,
    shard_files,
    shuffled_batches,
    task_acceptance,
    thinned,
)
from itemsage_core.training.training_examples import TASKS, task_probabilities

_ID_KEY = "itemsage-stream!"  # 16 bytes, as pandas requires


def product_keys(product_ids: pa.Array | pa.ChunkedArray) -> torch.Tensor:
    """A 64-bit key per product id, so that a batch can tell a product's copies apart."""
    ids = np.asarray(product_ids.to_pylist(), object)
    return torch.from_numpy(pd.util.hash_array(ids, hash_key=_ID_KEY).view(np.int64))


class StreamedEngagementObjective:
    """Engagement pairs streamed from `data_dir` (process `rank` of `world` reads its shards)."""

    name = "engagements"

    def __init__(
        self,
        data_dir: str | Path,
        config: TrainConfig,
        dev: torch.device,
        stream: StreamConfig = StreamConfig(),
        rank: int = 0,
        world: int = 1,
    ):
        manifest = read_prepared_manifest(data_dir)
        self.image_dim = manifest["options"]["image_dim"]
        counts = task_count_vector(manifest["counts"]["train_task_counts"])
        counts[[TASKS.index(t) for t in TASKS if t not in config.tasks]] = 0
        if not counts.sum():
            raise ItemSageError(f"no training examples for tasks {', '.join(config.tasks)}")
        self.probabilities = task_probabilities(
            counts, dict(config.task_weights), config.task_exponent
        )
        acceptance = task_acceptance(self.probabilities)
        # An epoch is as many examples as the chosen tasks hold (as in memory), split over the
        # processes; a pass over the shards keeps fewer (thinning), so an epoch spans passes.
        self.examples = math.ceil(int(counts.sum()) / world)
        self.kept = int(round(float((counts * acceptance).sum()) / world))
        self.config, self.dev, self.data_dir = config, dev, Path(data_dir)
        self.batch = min(config.batch_size, max(1, self.examples))
        self.pool = negative_pool(
            shard_files(self.data_dir / "products"),
            manifest["counts"]["valid_products"],
            stream.negatives,
            self.image_dim,
            np.random.default_rng([config.seed, rank]),
        )
        self.pool_keys = product_keys(self.pool.product_ids)
        self._files = shard_files(self.data_dir / "train", rank, world)
        self._acceptance, self._stream, self._rank = acceptance, stream, rank
        self._epoch, self._served = 0, 0
        self._batches = self._epochs()

    def _epochs(self) -> Iterator[pa.Table]:
        """Batches, pass after pass; pass e is drawn with its own RNG (seed, rank, e), so that a
        resumed run (`restore`) redraws it and skips the batches already served."""
        skip = self._served
        while True:
            rng = np.random.default_rng([self.config.seed, self._rank, self._epoch])
            rows = thinned(row_groups(self._files, rng), self._acceptance, rng)
            batches = shuffled_batches(rows, self.batch, self._stream.shuffle_buffer, rng)
            for batch in itertools.islice(batches, skip, None):
                self._served += 1
                yield batch
            self._epoch, self._served, skip = self._epoch + 1, 0, 0

    def position(self) -> dict:
        """Where the stream is: the pass and the batches of it served."""
        return {"epoch": self._epoch, "batches": self._served}

    def restore(self, position: dict) -> None:
        self._epoch, self._served = position["epoch"], position["batches"]
        self._batches = self._epochs()

    def __len__(self) -> int:
        return self.examples

    def describe(self) -> str:
        return (
            f"{self.examples} engagement examples an epoch, streamed from {self.data_dir} "
            f"(task mixing keeps about {self.kept} of a pass over the shards)"
        )

    def steps_per_epoch(self) -> int:
        return math.ceil(self.examples / self.batch)

    def loss(self, model: ItemSageEncoder, rng: np.random.Generator) -> LossParts:
        rows, dev = next(self._batches), self.dev
        positives = features_of(rows, self.image_dim)
        picks = rng.integers(len(self.pool), size=self.config.random_negatives)
        queries = np.array(rows.column(QUERY).combine_chunks().flatten(), np.float32)
        with autocast(dev, self.config.precision):
            vectors = model(positives.batch().to(dev)).float()
            negatives = model(self.pool.batch(picks).to(dev)).float()
        keys = product_keys(positives.product_ids).to(dev)
        correction = log_q(rows.column("task_counts"), self.probabilities)
        return mixed_negative_loss(
            torch.from_numpy(queries.reshape(rows.num_rows, -1)).to(dev),
            vectors,
            keys,
            torch.from_numpy(correction).to(dev),
            negatives,
            self.pool_keys[torch.from_numpy(picks)].to(dev),
            model.temperature,
        )
