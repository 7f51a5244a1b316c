"""Multi-task training of the encoder on (query embedding, engaged product) pairs.

`prepare_data` validates the catalog and the engagement log, builds the vocabulary, encodes every
valid product and splits the log into training and held-out examples. `train` then draws batches
that mix the chosen tasks (training_examples.sampling_probabilities), encodes the batch's positives
together with `random_negatives` products drawn uniformly from the catalog, and minimises the
mixed-negative loss with logQ computed exactly from the sampling distribution. Reproducible for a
seed on CPU (same machine and thread count).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

import numpy as np
import pyarrow as pa
import torch

from itemsage_core.catalog_contract import DEFAULT_IMAGE_DIM, validate_catalog
from itemsage_core.engagement_contract import validate_engagements
from itemsage_core.errors import ItemSageError
from itemsage_core.inference import autocast, pick_device
from itemsage_core.losses import mixed_negative_loss
from itemsage_core.model import ItemSageEncoder, ModelConfig
from itemsage_core.product_features import ProductFeatures, encode_products
from itemsage_core.training_examples import (TASKS, Examples, build_examples, holdout_mask,
                                             sampling_probabilities)
from itemsage_core.vocabulary import VocabConfig, Vocabulary, build_vocabulary

Progress = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation and data settings (docs/model.md lists each with its default)."""

    epochs: int = 2
    batch_size: int = 256
    random_negatives: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    seed: int = 0
    tasks: tuple[str, ...] = TASKS
    task_weights: tuple[tuple[str, float], ...] = ()
    task_exponent: float = 0.5
    holdout_fraction: float = 0.1
    precision: str = "auto"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class TrainingData:
    vocab: Vocabulary
    features: ProductFeatures
    train: Examples
    heldout: Examples
    summary: dict


def _log(progress: Progress | None, message: str) -> None:
    if progress:
        progress(message)


def prepare_data(catalog: pa.Table, engagements: pa.Table, holdout_fraction: float,
                 vocab: Vocabulary | None = None, vocab_config: VocabConfig = VocabConfig(),
                 image_dim: int = DEFAULT_IMAGE_DIM, query_dim: int = 256,
                 progress: Progress | None = None) -> TrainingData:
    """Validated, encoded products and the train / held-out example split."""
    products = validate_catalog(catalog, image_dim)
    log = validate_engagements(engagements, query_dim)
    for report in (products.report, log.report):
        _log(progress, f"{report.contract}: {report.valid} of {report.rows} rows valid"
             + (f", {report.rejected} rejected {report.rule_counts}" if report.rejected else ""))
    if products.valid.num_rows == 0:
        raise ItemSageError("the catalog has no valid product to train on")
    start = time.perf_counter()
    if vocab is None:
        vocab = build_vocabulary(products.valid, vocab_config)
    features = encode_products(products.valid, vocab, image_dim)
    seconds = time.perf_counter() - start
    _log(progress, f"vocabulary of {vocab.size} tokens; tokenised and encoded "
         f"{len(features)} products in {seconds:.1f}s "
         f"({1e6 * seconds / len(features):.0f} us per product)")
    held = holdout_mask(log.valid, holdout_fraction)
    train, unknown_train = build_examples(log.valid.filter(pa.array(~held)), features.product_ids)
    heldout, unknown_held = build_examples(log.valid.filter(pa.array(held)), features.product_ids)
    unknown = unknown_train + unknown_held
    if unknown:
        _log(progress, f"engagements: {unknown} rows left out, their product is not a valid "
             "catalog product")
    summary = {"catalog_rows": products.report.rows, "valid_products": len(features),
               "engagement_rows": log.report.rows, "valid_engagements": log.report.valid,
               "unknown_product_engagements": unknown, "train_examples": len(train),
               "heldout_examples": len(heldout)}
    return TrainingData(vocab=vocab, features=features, train=train, heldout=heldout,
                        summary=summary)


def _learning_rate(config: TrainConfig, step: int, total: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
    return config.learning_rate * (0.1 + 0.45 * (1 + math.cos(math.pi * min(progress, 1.0))))


def train(data: TrainingData, model_config: ModelConfig, config: TrainConfig,
          progress: Progress | None = None, device: str = "auto") -> tuple[ItemSageEncoder, dict]:
    """Train a fresh encoder; returns it (in eval mode) and the training history."""
    chosen = np.isin(data.train.tasks, [TASKS.index(t) for t in config.tasks])
    examples = data.train.subset(chosen)
    if len(examples) == 0:
        raise ItemSageError(f"no training examples for tasks {', '.join(config.tasks)}")
    dev = pick_device(device)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(dev.type == "cpu")  # bit-reproducible on CPU
    try:
        return _train(data, examples, model_config, config, dev, progress)
    finally:
        torch.use_deterministic_algorithms(previous)


def _train(data: TrainingData, examples: Examples, model_config: ModelConfig,
           config: TrainConfig, dev: torch.device,
           progress: Progress | None) -> tuple[ItemSageEncoder, dict]:
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = ItemSageEncoder(model_config).to(dev).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    probabilities = sampling_probabilities(examples.tasks, dict(config.task_weights),
                                           config.task_exponent)
    product_q = np.bincount(examples.products, weights=probabilities,
                            minlength=len(data.features))
    log_q = torch.from_numpy(np.log(np.maximum(product_q, 1e-12)).astype(np.float32)).to(dev)
    batch = min(config.batch_size, len(examples))
    steps_per_epoch = math.ceil(len(examples) / batch)
    total = steps_per_epoch * config.epochs
    _log(progress, f"training on {len(examples)} examples ({examples.task_counts()}), "
         f"{config.epochs} epochs of {steps_per_epoch} steps, device {dev}")
    history, started, last_report = [], time.perf_counter(), time.perf_counter()
    window_loss, window_steps = 0.0, 0
    for step in range(total):
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(config, step, total)
        pick = rng.choice(len(examples), size=batch, p=probabilities)
        positives = examples.products[pick]
        negatives = rng.integers(len(data.features), size=config.random_negatives)
        inputs = data.features.batch(np.concatenate([positives, negatives])).to(dev)
        queries = torch.from_numpy(examples.queries[pick]).to(dev)
        positive_ids = torch.from_numpy(positives).to(dev)
        with autocast(dev, config.precision):
            vectors = model(inputs).float()
        parts = mixed_negative_loss(
            queries, vectors[:batch], positive_ids, log_q[positive_ids], vectors[batch:],
            torch.from_numpy(negatives).to(dev), model.temperature)
        optimizer.zero_grad(set_to_none=True)
        parts.total.backward()
        optimizer.step()
        window_loss, window_steps = window_loss + parts.total.item(), window_steps + 1
        end_of_epoch = (step + 1) % steps_per_epoch == 0
        if end_of_epoch or time.perf_counter() - last_report > 10:
            elapsed = time.perf_counter() - started
            entry = {"step": step + 1, "epoch": step / steps_per_epoch,
                     "loss": window_loss / window_steps,
                     "temperature": model.temperature.item(),
                     "examples_per_s": (step + 1) * batch / elapsed}
            history.append(entry)
            _log(progress, f"epoch {step // steps_per_epoch + 1}/{config.epochs} step "
                 f"{step % steps_per_epoch + 1}/{steps_per_epoch}: loss {entry['loss']:.4f}, "
                 f"temperature {entry['temperature']:.4f}, "
                 f"{entry['examples_per_s']:.0f} examples/s")
            window_loss, window_steps, last_report = 0.0, 0, time.perf_counter()
    model.eval()
    return model, {"history": history, "seconds": time.perf_counter() - started,
                   "examples": len(examples), "steps": total}
