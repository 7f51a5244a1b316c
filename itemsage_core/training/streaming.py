"""Training examples streamed from prepared shards (`itemsage prepare-training`) with bounded
memory: whatever the size of the catalog or the log, a process holds one row group being read,
per objective a shuffle buffer of at most `shuffle_buffer` rows, and one pool of at most
`negatives` random products.

Task mixing when streaming: the in-memory trainer draws example i of task t with probability
p_t (training_examples.task_probabilities: task t gets a share ~ weight_t * count_t**exponent).
A stream cannot draw with replacement, so it thins instead: each example of task t is kept with
probability p_t / max(p), and the kept examples are shuffled. Task t's expected share of the kept
examples is count_t * p_t / sum(count * p), the same share as the in-memory draws; a rare task is
not repeated within an epoch, its examples are simply kept while the frequent tasks' are thinned.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from itemsage_core.contracts.catalog_contract import PRODUCT_ID
from itemsage_core.errors import ItemSageError
from itemsage_core.features.product_features import ProductFeatures
from itemsage_core.features.vocabulary import FEATURES, TextBags
from itemsage_core.storage.parquet_io import open_parquet
from itemsage_core.training.prepared_data import TASK
from itemsage_core.training.training_examples import TASKS

# Tags of the random streams a training process draws (tagged_rng), so that no two share numbers.
TRAINER, NEGATIVE_POOL, ENGAGEMENT_PASSES, CATALOG_PASSES, EVALUATION = range(1, 6)


def tagged_rng(seed: int, tag: int, rank: int = 0, index: int = 0) -> np.random.Generator:
    """The random stream `tag` of process `rank` (its `index`-th, e.g. a pass) for a run's seed:
    distinct for every (tag, rank, index), and never one of default_rng(seed)'s."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(tag, rank, index)))


def shard_files(files: list[str], rank: int = 0, world: int = 1) -> list[str]:
    """The files of one part of prepared data (prepared_data.prepared_files) that process `rank`
    of `world` reads: every world-th."""
    if len(files) < world:
        raise ItemSageError(
            f"the prepared data has {len(files)} Parquet files for {world} training processes; "
            f"prepare the data with --shards {world} or more"
        )
    return files[rank::world]


def row_groups(files: list[str], rng: np.random.Generator) -> Iterator[pa.Table]:
    """Every row group of `files` (paths or URIs) once, the files and each file's row groups in
    a random order."""
    for i in rng.permutation(len(files)):
        handle = open_parquet(os.fspath(files[int(i)]))
        for group in rng.permutation(handle.num_row_groups):
            yield handle.read_row_group(int(group))


def task_acceptance(probabilities: np.ndarray) -> np.ndarray:
    """Per task, the probability of keeping one of its examples, from the probability of drawing
    one in memory (training_examples.task_probabilities; module docstring)."""
    return probabilities / probabilities.max()


def thinned(
    tables: Iterable[pa.Table], acceptance: np.ndarray, rng: np.random.Generator
) -> Iterator[pa.Table]:
    """Each table's examples, each kept with its task's `acceptance`."""
    for table in tables:
        tasks = table.column(TASK).to_numpy()
        yield table.filter(pa.array(rng.random(len(tasks)) < acceptance[tasks]))


def shuffled_batches(
    tables: Iterable[pa.Table], batch_size: int, capacity: int, rng: np.random.Generator
) -> Iterator[pa.Table]:
    """Batches of `batch_size` rows drawn at random from a buffer that holds at most `capacity`
    rows plus the table being added; every row comes out once (the last batch may be short)."""
    buffer = None
    for table in tables:
        buffer = table if buffer is None else pa.concat_tables([buffer, table])
        while buffer.num_rows >= max(capacity, batch_size):
            batch, buffer = _draw(buffer, batch_size, rng)
            yield batch
    while buffer is not None and buffer.num_rows:
        batch, buffer = _draw(buffer, min(batch_size, buffer.num_rows), rng)
        yield batch


def _draw(buffer: pa.Table, size: int, rng: np.random.Generator) -> tuple[pa.Table, pa.Table]:
    """`size` random rows of `buffer`, and the rows left."""
    picked = np.zeros(buffer.num_rows, bool)
    picked[rng.choice(buffer.num_rows, size, replace=False)] = True
    batch = buffer.filter(pa.array(picked)).take(rng.permutation(size))
    return batch, buffer.filter(pa.array(~picked)).combine_chunks()


def negative_pool(files: list[str], products: int, size: int, rng: np.random.Generator) -> pa.Table:
    """About `size` product rows (at most `size`) sampled uniformly from the product shards,
    which hold `products` products in all: each kept with probability size / products."""
    keep = min(1.0, size / max(products, 1))
    parts, held = [], 0
    for table in row_groups(files, rng):
        sample = table.filter(pa.array(rng.random(table.num_rows) < keep))
        parts.append(sample.slice(0, size - held))
        held += parts[-1].num_rows
        if held >= size:
            break
    if not held:
        raise ItemSageError("the product shards hold no product to draw negatives from")
    return pa.concat_tables(parts).combine_chunks()


class ShardStream:
    """Batches of rows from `files`, pass after pass, pass e drawn with tagged_rng(seed, tag,
    rank, e): files and row groups in a random order, rows kept with their task's `acceptance`
    when given (thinning), shuffled in a bounded buffer. A resumed run (`restore`) redraws the
    pass it stopped in and skips the batches already served (reading them again)."""

    def __init__(
        self,
        files: list[str],
        batch: int,
        buffer: int,
        seed: tuple[int, int, int],  # (run seed, tag, rank)
        acceptance: np.ndarray | None = None,
    ):
        self.files, self.batch, self.buffer, self.seed = files, batch, buffer, seed
        self.acceptance = acceptance
        self.restore({"epoch": 0, "batches": 0})

    def _passes(self) -> Iterator[pa.Table]:
        skip = self._served
        while True:
            rng = tagged_rng(*self.seed, self._epoch)
            rows = row_groups(self.files, rng)
            if self.acceptance is not None:
                rows = thinned(rows, self.acceptance, rng)
            served = 0
            for batch in shuffled_batches(rows, self.batch, self.buffer, rng):
                served += 1
                if served > skip:
                    self._served += 1
                    yield batch
            if not served:  # or every process of the group would wait for this one forever
                raise ItemSageError(
                    f"{len(self.files)} training files of process {self.seed[2]} "
                    f"({os.fspath(self.files[0]) if self.files else 'none'}, ...) hold no row "
                    "to train on: prepare the data again, or train on fewer processes"
                )
            self._epoch, self._served, skip = self._epoch + 1, 0, 0

    def __next__(self) -> pa.Table:
        return next(self._batches)

    def position(self) -> dict:
        """Where the stream is: the pass and the batches of it served."""
        return {"epoch": self._epoch, "batches": self._served}

    def restore(self, position: dict) -> None:
        self._epoch, self._served = position["epoch"], position["batches"]
        self._batches = self._passes()


def features_of(rows: pa.Table, image_dim: int) -> ProductFeatures:
    """The encoder inputs of prepared product rows (products or training examples)."""
    tokens, starts = _flat(rows.column("token_ids"))
    images, image_starts = _flat(rows.column("image_values"))
    per_product = len(FEATURES)
    relative = _flat(rows.column("bag_offsets"))[0].astype(np.int64)
    offsets = (starts[:-1, None] + relative.reshape(-1, per_product + 1)[:, :per_product]).ravel()
    return ProductFeatures(
        product_ids=rows.column(PRODUCT_ID).combine_chunks(),
        image_values=images.astype(np.float32, copy=False).reshape(-1, image_dim),
        image_offsets=image_starts // image_dim,
        bags=TextBags(ids=tokens.astype(np.int64), offsets=np.append(offsets, starts[-1])),
    )


def _flat(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """A list column's values and its row offsets into them (from 0), slices and chunks alike."""
    lists = column.combine_chunks()
    values = pc.list_flatten(lists).to_numpy(zero_copy_only=False)
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
    return values, np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])


def log_q(task_counts: pa.ChunkedArray, probabilities: np.ndarray) -> np.ndarray:
    """log of each example's product sampling probability: sum over tasks of the product's
    training examples of that task times one example's draw probability."""
    counts = pc.list_flatten(task_counts).to_numpy().astype(np.float64)
    q = counts.reshape(-1, len(TASKS)) @ probabilities
    return np.log(np.maximum(q, 1e-12)).astype(np.float32)
