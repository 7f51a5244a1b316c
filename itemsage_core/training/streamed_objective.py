"""The two objectives over prepared data streamed from its shards (training/streaming.py), with
the losses of their in-memory twins (trainer.EngagementObjective, trainer.CatalogObjective):
positives (or catalog pairs) from the stream, random negatives from a bounded pool, so that
memory does not grow with the catalog or the log. They plug into the trainer's one training loop
(trainer.train_objectives)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from itemsage_core.contracts.catalog_contract import PRODUCT_ID
from itemsage_core.errors import ItemSageError
from itemsage_core.model.encoder import ItemSageEncoder
from itemsage_core.model.inference import autocast
from itemsage_core.model.losses import LossParts, mixed_negative_loss, symmetric_pair_loss
from itemsage_core.training.catalog_views import view_pairs
from itemsage_core.training.config import StreamConfig, TrainConfig
from itemsage_core.training.prepared_data import (
    QUERY,
    partners_of,
    prepared_files,
    read_prepared_manifest,
    task_count_vector,
)
from itemsage_core.training.streaming import (
    CATALOG_PASSES,
    ENGAGEMENT_PASSES,
    NEGATIVE_POOL,
    ShardStream,
    features_of,
    log_q,
    negative_pool,
    shard_files,
    tagged_rng,
    task_acceptance,
)
from itemsage_core.training.training_examples import TASKS, task_probabilities

_ID_KEY = "itemsage-stream!"  # 16 bytes, as pandas requires


def product_keys(product_ids: pa.Array | pa.ChunkedArray) -> torch.Tensor:
    """A 64-bit key per product id, so that a batch can tell a product's copies apart."""
    ids = np.asarray(product_ids.to_pylist(), object)
    return torch.from_numpy(pd.util.hash_array(ids, hash_key=_ID_KEY).view(np.int64))


class _Streamed:
    """What both streamed objectives share: the manifest, the pool of random negatives (drawn
    once per process: `pool` passes another objective's), the stream of batches."""

    def __init__(
        self,
        data_dir: str,
        config: TrainConfig,
        dev: torch.device,
        stream: StreamConfig = StreamConfig(),
        rank: int = 0,
        world: int = 1,
        pool: tuple[pa.Table, torch.Tensor] | None = None,
    ):
        self.manifest = read_prepared_manifest(data_dir)
        self.image_dim = self.manifest["options"]["image_dim"]
        self.config, self.dev, self.data_dir = config, dev, data_dir
        if pool is None:
            rows = negative_pool(
                self.files("products"),
                self.manifest["counts"]["valid_products"],
                stream.negatives,
                tagged_rng(config.seed, NEGATIVE_POOL, rank),
            )
            pool = rows, product_keys(rows.column(PRODUCT_ID))
        self.pool, self.pool_keys = pool
        self.stream = self.shard_stream(stream, rank, world)

    def shard_stream(self, stream: StreamConfig, rank: int, world: int) -> ShardStream:
        """The objective's stream of batches for process `rank` of `world` (and its sizes)."""
        raise NotImplementedError

    def files(self, part: str) -> list[str]:
        """The files of one part of the data, as the manifest lists them."""
        return prepared_files(self.data_dir, self.manifest, part)

    def negatives(self, rng: np.random.Generator) -> tuple[pa.Table, torch.Tensor]:
        """`random_negatives` rows of the pool and their keys."""
        picks = rng.integers(self.pool.num_rows, size=self.config.random_negatives)
        return self.pool.take(picks), self.pool_keys[torch.from_numpy(picks)].to(self.dev)

    def __len__(self) -> int:
        return self.examples

    def steps_per_epoch(self) -> int:
        return math.ceil(self.examples / self.batch)

    def position(self) -> dict:
        return self.stream.position()

    def restore(self, position: dict) -> None:
        self.stream.restore(position)


class StreamedEngagementObjective(_Streamed):
    """Engagement pairs streamed from `data_dir` (process `rank` of `world` reads its shards)."""

    name = "engagements"

    def shard_stream(self, stream: StreamConfig, rank: int, world: int) -> ShardStream:
        config = self.config
        counts = task_count_vector(self.manifest["counts"].get("train_task_counts", {}))
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
        self.batch = min(config.batch_size, max(1, self.examples))
        return ShardStream(
            shard_files(self.files("train"), rank, world),
            self.batch,
            stream.shuffle_buffer,
            (config.seed, ENGAGEMENT_PASSES, rank),
            acceptance,
        )

    def describe(self) -> str:
        return (
            f"{self.examples} engagement examples an epoch, streamed from {self.data_dir} "
            f"(task mixing keeps about {self.kept} of a pass over the shards)"
        )

    def loss(self, model: ItemSageEncoder, rng: np.random.Generator) -> LossParts:
        rows, dev = next(self.stream), self.dev
        negatives, negative_keys = self.negatives(rng)
        inputs = features_of(
            pa.concat_tables([rows.select(negatives.column_names), negatives]), self.image_dim
        )
        queries = np.array(rows.column(QUERY).combine_chunks().flatten(), np.float32)
        with autocast(dev, self.config.precision):
            vectors = model(inputs.batch().to(dev)).float()
        keys = product_keys(rows.column(PRODUCT_ID)).to(dev)
        correction = log_q(rows.column("task_counts"), self.probabilities)
        return mixed_negative_loss(
            torch.from_numpy(queries.reshape(rows.num_rows, -1)).to(dev),
            vectors[: rows.num_rows],
            keys,
            torch.from_numpy(correction).to(dev),
            vectors[rows.num_rows :],
            negative_keys,
            model.temperature,
        )


class StreamedCatalogObjective(_Streamed):
    """The catalog objective streamed from `data_dir`: its catalog pairs (a product and one of
    its lexical neighbours, prepared with --neighbours), or its products alone (each paired
    with itself); process `rank` of `world` reads its shards."""

    name = "catalog"

    def shard_stream(self, stream: StreamConfig, rank: int, world: int) -> ShardStream:
        config = self.config
        self.paired = bool(self.manifest["options"].get("neighbours"))
        if config.neighbours and not self.paired:
            raise ItemSageError(
                f"the catalog objective pairs products with lexical neighbours, and "
                f"{self.data_dir} "
                "was prepared without them: prepare with --neighbours K, or train with "
                "--neighbours 0"
            )
        # An epoch is as many products as the catalog holds, as in memory.
        self.examples = math.ceil(self.manifest["counts"]["valid_products"] / world)
        self.batch = min(config.batch_size, max(2, self.examples))
        part = "catalog_pairs" if self.paired and config.neighbours else "products"
        return ShardStream(
            shard_files(self.files(part), rank, world),
            self.batch,
            stream.shuffle_buffer,
            (config.seed, CATALOG_PASSES, rank),
        )

    def describe(self) -> str:
        partner = (
            f"{self.config.neighbour_share:.0%} of them paired with a lexical neighbour"
            if self.paired and self.config.neighbours
            else "two views of each"
        )
        return (
            f"{self.examples} catalog products an epoch ({partner}), streamed from {self.data_dir}"
        )

    def loss(self, model: ItemSageEncoder, rng: np.random.Generator) -> LossParts:
        rows, dev = next(self.stream), self.dev
        b = rows.num_rows
        picks = rows.select(self.pool.column_names)
        partners = picks
        if self.paired and self.config.neighbours:
            swap = rng.random(b) < self.config.neighbour_share
            both = pa.concat_tables([picks, partners_of(rows)])
            partners = both.take(np.where(swap, np.arange(b) + b, np.arange(b)))
        negatives, negative_keys = self.negatives(rng)
        inputs = features_of(pa.concat_tables([picks, partners, negatives]), self.image_dim)
        pick_keys = product_keys(picks.column(PRODUCT_ID))
        partner_keys = product_keys(partners.column(PRODUCT_ID))
        same = (pick_keys == partner_keys).numpy()  # a product without neighbours: itself
        viewed = view_pairs(inputs.batch(), b, rng, self.config.views, same=same).to(dev)
        with autocast(dev, self.config.precision):
            vectors = model(viewed).float()
        return symmetric_pair_loss(
            vectors[:b],
            vectors[b : 2 * b],
            pick_keys.to(dev),
            partner_keys.to(dev),
            vectors[2 * b :],
            negative_keys,
            model.temperature,
        )
