"""What every benchmark measures on: the synthetic catalog, the paper-shaped encoder, the machine.

Kept free of Spark, hnswlib and faiss so that bench/gpu_bench.py runs on a machine with only
PyTorch and pyarrow.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from itemsage_core.features.vocabulary import Vocabulary, build_vocabulary
from itemsage_core.model.checkpoint import save_checkpoint
from itemsage_core.model.config import ModelConfig
from itemsage_core.model.encoder import ItemSageEncoder
from itemsage_core.synthetic.world import WorldConfig, generate_world

BASE = 100_000  # the largest world generated in one piece
IMAGE_DIM = 256


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def write_catalog(products: int, directory: Path) -> pa.Table:
    """Write a catalog of `products`; returns the in-process sample (at most BASE products).

    Up to BASE products it is one synthetic world. Beyond (the world generator holds a whole
    world in memory), the BASE-product world is written again and again with new ids and its
    image vectors moved by small noise, so every product still has its own vectors."""
    world = generate_world(
        WorldConfig(products=min(products, BASE), seed=0, engagements_per_product=0.1)
    ).catalog
    directory.mkdir(parents=True)
    for copy in range(-(-products // BASE)):
        part = world.slice(0, min(BASE, products - copy * BASE))
        if copy:
            rng = np.random.default_rng(copy)
            images = part.column("image_embeddings").combine_chunks()
            vectors = pc.list_flatten(images)
            values = pc.list_flatten(vectors).to_numpy(zero_copy_only=False)
            moved = values + rng.normal(0, 0.01 / 16, values.shape).astype(np.float32)
            images = pa.ListArray.from_arrays(
                images.offsets, pa.ListArray.from_arrays(vectors.offsets, pa.array(moved))
            )
            ids = pc.binary_join_element_wise(part.column("product_id"), f"c{copy}", "-")
            part = part.set_column(0, "product_id", ids).set_column(
                part.schema.get_field_index("image_embeddings"), "image_embeddings", images
            )
        pq.write_table(part, directory / f"part-{copy:05d}.parquet", row_group_size=50_000)
    return world


def paper_model(catalog: pa.Table, model_dir: Path) -> tuple[ItemSageEncoder, Vocabulary]:
    """A paper-shaped encoder (d_model 512, 8 heads, FFN 2048, 1 layer, 100k x 256 hash table),
    initialised, not trained (throughput does not depend on the weights), with a vocabulary
    from `catalog`; saved as a checkpoint in `model_dir`."""
    vocab = build_vocabulary(catalog)
    torch.manual_seed(0)
    model = ItemSageEncoder(ModelConfig.create(vocab.size)).eval()
    save_checkpoint(model_dir, model, vocab, {"image_dim": IMAGE_DIM}, {})
    return model, vocab
