"""Batch sources over prepared data streamed from its shards (training/streaming.py,
objectives.BatchSource): engagement examples, or catalog pairs (or products alone, each paired
with itself), from the stream; random negatives from one bounded pool per process, so that
memory does not grow with the catalog or the log. Each process reads its own shards."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from itemsage_core.contracts.catalog_contract import PRODUCT_ID
from itemsage_core.errors import ItemSageError
from itemsage_core.training.config import CATALOG, ENGAGEMENTS, StreamConfig, TrainConfig
from itemsage_core.training.objectives import ExampleBatch, PairBatch, SourcedObjective
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


@dataclasses.dataclass(frozen=True)
class NegativePool:
    """A process's random products for negatives (streaming.negative_pool) and their keys."""

    rows: pa.Table
    keys: torch.Tensor

    @classmethod
    def draw(
        cls, data_dir: str, manifest: dict, config: TrainConfig, size: int, rank: int = 0
    ) -> NegativePool:
        rows = negative_pool(
            prepared_files(data_dir, manifest, "products"),
            manifest["counts"]["valid_products"],
            size,
            tagged_rng(config.seed, NEGATIVE_POOL, rank),
        )
        return cls(rows, product_keys(rows.column(PRODUCT_ID)))

    def negatives(self, rng: np.random.Generator, size: int) -> tuple[pa.Table, torch.Tensor]:
        """`size` rows of the pool, drawn with replacement, and their keys."""
        picks = rng.integers(self.rows.num_rows, size=size)
        return self.rows.take(picks), self.keys[torch.from_numpy(picks)]


class _Streamed:
    """What both streamed sources share: the manifest, the pool, the stream of batches."""

    def __init__(
        self,
        data_dir: str,
        manifest: dict,
        pool: NegativePool,
        config: TrainConfig,
        stream: StreamConfig = StreamConfig(),
        rank: int = 0,
        world: int = 1,
    ):
        self.data_dir, self.manifest, self.pool, self.config = data_dir, manifest, pool, config
        self.image_dim = manifest["options"]["image_dim"]
        self.stream = self.shard_stream(stream, rank, world)

    def shard_stream(self, stream: StreamConfig, rank: int, world: int) -> ShardStream:
        """The source's stream of batches for process `rank` of `world` (and its sizes)."""
        raise NotImplementedError

    def files(self, part: str) -> list[str]:
        """The files of one part of the data, as the manifest lists them."""
        return prepared_files(self.data_dir, self.manifest, part)

    def __len__(self) -> int:
        return self.examples

    def position(self) -> dict:
        return self.stream.position()

    def restore(self, position: dict) -> None:
        self.stream.restore(position)


class StreamedExamples(_Streamed):
    """Engagement examples of the chosen tasks, thinned to their mix (streaming.py)."""

    name = ENGAGEMENTS

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

    def draw(self, rng: np.random.Generator) -> ExampleBatch:
        rows = next(self.stream)
        negatives, negative_keys = self.pool.negatives(rng, self.config.random_negatives)
        inputs = features_of(
            pa.concat_tables([rows.select(negatives.column_names), negatives]), self.image_dim
        )
        queries = np.array(rows.column(QUERY).combine_chunks().flatten(), np.float32)
        return ExampleBatch(
            inputs=inputs.batch(),
            queries=torch.from_numpy(queries.reshape(rows.num_rows, -1)),
            keys=product_keys(rows.column(PRODUCT_ID)),
            log_q=torch.from_numpy(log_q(rows.column("task_counts"), self.probabilities)),
            negative_keys=negative_keys,
        )


class StreamedPairs(_Streamed):
    """Catalog pairs (a product and one of its lexical neighbours, prepared with --neighbours),
    each kept as a pair with probability `neighbour_share`; or the products alone, each paired
    with itself."""

    name = CATALOG

    def shard_stream(self, stream: StreamConfig, rank: int, world: int) -> ShardStream:
        config = self.config
        prepared_pairs = bool(self.manifest["options"].get("neighbours"))
        if config.neighbours and not prepared_pairs:
            raise ItemSageError(
                f"the catalog objective pairs products with lexical neighbours, and "
                f"{self.data_dir} "
                "was prepared without them: prepare with --neighbours K, or train with "
                "--neighbours 0"
            )
        self.paired = prepared_pairs and bool(config.neighbours)
        # An epoch is as many products as the catalog holds, as in memory.
        self.examples = math.ceil(self.manifest["counts"]["valid_products"] / world)
        self.batch = min(config.batch_size, max(2, self.examples))
        return ShardStream(
            shard_files(self.files("catalog_pairs" if self.paired else "products"), rank, world),
            self.batch,
            stream.shuffle_buffer,
            (config.seed, CATALOG_PASSES, rank),
        )

    def describe(self) -> str:
        partner = (
            f"{self.config.neighbour_share:.0%} of them paired with a lexical neighbour"
            if self.paired
            else "two views of each"
        )
        return (
            f"{self.examples} catalog products an epoch ({partner}), streamed from {self.data_dir}"
        )

    def draw(self, rng: np.random.Generator) -> PairBatch:
        rows = next(self.stream)
        b = rows.num_rows
        picks = rows.select(self.pool.rows.column_names)
        partners = picks
        if self.paired:
            swap = rng.random(b) < self.config.neighbour_share
            both = pa.concat_tables([picks, partners_of(rows)])
            partners = both.take(np.where(swap, np.arange(b) + b, np.arange(b)))
        negatives, negative_keys = self.pool.negatives(rng, self.config.random_negatives)
        inputs = features_of(pa.concat_tables([picks, partners, negatives]), self.image_dim)
        return PairBatch(
            inputs=inputs.batch(),
            keys=product_keys(picks.column(PRODUCT_ID)),
            partner_keys=product_keys(partners.column(PRODUCT_ID)),
            negative_keys=negative_keys,
        )


def streamed_objectives(
    data_dir: str,
    weights: dict[str, float],
    config: TrainConfig,
    stream: StreamConfig = StreamConfig(),
    rank: int = 0,
    world: int = 1,
) -> list[SourcedObjective]:
    """The objectives `weights` names (config.objective_weights), streamed from `data_dir` by
    process `rank` of `world`, sharing one pool of negatives."""
    manifest = read_prepared_manifest(data_dir)
    pool = NegativePool.draw(data_dir, manifest, config, stream.negatives, rank)
    sources = {ENGAGEMENTS: StreamedExamples, CATALOG: StreamedPairs}
    args = (data_dir, manifest, pool, config, stream, rank, world)
    return [SourcedObjective(sources[name](*args), w, config) for name, w in weights.items()]
