"""Training the encoder: multi-task on engagements, and catalog-supervised on the catalog itself.

Two objectives (objectives.py: each a task's loss on batches from memory or from a stream), one
training step; which of them a run trains is config.objective_weights:

- **engagements** (`prepare_data`): batches of (query embedding, engaged product) pairs that mix
  the chosen tasks (training_examples.sampling_probabilities), the positives encoded together with
  `random_negatives` products drawn uniformly from the catalog, logQ computed exactly from the
  sampling distribution, through the mixed-negative loss of losses.py;
- **catalog** (`prepare_catalog_data`, for a catalog without an engagement log, or as an auxiliary
  task weighted by `catalog_task_weight`): products drawn uniformly; each is paired with one of
  its `neighbours` nearest neighbours by the teacher (TF-IDF, mixed with the dense features'
  cosine when the catalog has them: teacher_neighbours.py) with probability
  `neighbour_share`, else with itself; random views of the pair (catalog_views.py) are pulled
  together against the other products of the batch and random catalog negatives, symmetrically.
  Uniform sampling needs no logQ correction. docs/model.md gives the designs measured.

The one training loop (`train_objectives`) runs these objectives on data in memory
(memory_batches.py, `objectives_for`) or streamed (streamed_batches.py), saves and resumes the
whole state (train_state.py), and runs data-parallel under DDP when a torch.distributed process
group is up (data_parallel.py).

Reproducible for a seed on CPU (same machine and thread count).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from itemsage_core.contracts.catalog_contract import (
    DEFAULT_IMAGE_DIM,
    TEXT_FEATURES,
    validate_catalog,
)
from itemsage_core.contracts.dense_features import dense_columns
from itemsage_core.contracts.engagement_contract import validate_engagements
from itemsage_core.errors import ItemSageError
from itemsage_core.features.lexical_neighbours import DEFAULT_NEIGHBOURS, feature_text
from itemsage_core.features.product_features import ProductFeatures, encode_products
from itemsage_core.features.teacher_neighbours import (
    check_teacher,
    default_teacher,
    mutual_neighbours,
    teacher_neighbours,
)
from itemsage_core.features.vocabulary import VocabConfig, Vocabulary, build_vocabulary
from itemsage_core.model.config import ModelConfig
from itemsage_core.model.encoder import ItemSageEncoder
from itemsage_core.model.inference import pick_device
from itemsage_core.training.config import (
    CATALOG,
    ENGAGEMENTS,
    LoopConfig,
    TrainConfig,
    objective_weights,
)
from itemsage_core.training.memory_batches import CatalogBatches, ExampleBatches
from itemsage_core.training.objectives import Objective, SourcedObjective
from itemsage_core.training.streaming import TRAINER, tagged_rng
from itemsage_core.training.train_state import (
    TrainState,
    clear_train_states,
    latest_train_state,
    random_state,
    save_train_state,
    set_random_state,
)
from itemsage_core.training.training_examples import (
    TASKS,
    Examples,
    build_examples,
    holdout_mask,
)

Progress = Callable[[str], None]
HISTORY_POINTS = 50  # history entries a run records, about (and one at each epoch's end)


@dataclasses.dataclass
class TrainingData:
    """Encoded products and, when there is an engagement log, the example split."""

    vocab: Vocabulary
    features: ProductFeatures
    train: Examples | None
    heldout: Examples | None
    summary: dict
    neighbours: np.ndarray | None = None
    dense: dict[str, int] = dataclasses.field(default_factory=dict)  # name -> dim, token order


def _log(progress: Progress | None, message: str) -> None:
    if progress:
        progress(message)


def prepare_data(
    catalog: pa.Table,
    engagements: pa.Table,
    holdout_fraction: float,
    vocab: Vocabulary | None = None,
    vocab_config: VocabConfig = VocabConfig(),
    image_dim: int = DEFAULT_IMAGE_DIM,
    query_dim: int = 256,
    neighbours: int = 0,
    progress: Progress | None = None,
    dense: dict[str, int] | None = None,
    teacher: dict[str, float] | None = None,
    mutual: bool = False,
) -> TrainingData:
    """Validated, encoded products and the train / held-out example split (and the teacher's
    neighbours, for the catalog objective as an auxiliary task)."""
    data = prepare_catalog_data(
        catalog, vocab, vocab_config, image_dim, neighbours, progress, dense, teacher, mutual
    )
    features = data.features
    log = validate_engagements(engagements, query_dim)
    _log_report(progress, log.report)
    held = holdout_mask(log.valid, holdout_fraction)
    train, unknown_train = build_examples(log.valid.filter(pa.array(~held)), features.product_ids)
    heldout, unknown_held = build_examples(log.valid.filter(pa.array(held)), features.product_ids)
    unknown = unknown_train + unknown_held
    if unknown:
        _log(
            progress,
            f"engagements: {unknown} rows left out, their product is not a valid catalog product",
        )
    summary = {
        **data.summary,
        "engagement_rows": log.report.rows,
        "valid_engagements": log.report.valid,
        "unknown_product_engagements": unknown,
        "train_examples": len(train),
        "heldout_examples": len(heldout),
    }
    return dataclasses.replace(data, train=train, heldout=heldout, summary=summary)


def _log_report(progress: Progress | None, report) -> None:
    _log(
        progress,
        f"{report.contract}: {report.valid} of {report.rows} rows valid"
        + (f", {report.rejected} rejected {report.rule_counts}" if report.rejected else ""),
    )


def prepare_catalog_data(
    catalog: pa.Table,
    vocab: Vocabulary | None = None,
    vocab_config: VocabConfig = VocabConfig(),
    image_dim: int = DEFAULT_IMAGE_DIM,
    neighbours: int = DEFAULT_NEIGHBOURS,
    progress: Progress | None = None,
    dense: dict[str, int] | None = None,
    teacher: dict[str, float] | None = None,
    mutual: bool = False,
) -> TrainingData:
    """Validated, encoded products (no engagement log): the catalog objective's data, with
    each product's `neighbours` nearest neighbours by the `teacher` mix when asked (default:
    default_teacher), only the mutual ones with `mutual`. `dense`: the dense features to
    encode (a model's), by default every one the catalog declares."""
    products = validate_catalog(catalog, image_dim)
    if dense is None:
        dense = dense_columns(products.valid.schema)
    _log_report(progress, products.report)
    if products.valid.num_rows == 0:
        raise ItemSageError("the catalog has no valid product to train on")
    start = time.perf_counter()
    if vocab is None:
        vocab = build_vocabulary(products.valid, vocab_config)
    features = encode_products(products.valid, vocab, image_dim, dense)
    seconds = time.perf_counter() - start
    _log(
        progress,
        f"vocabulary of {vocab.size} tokens; tokenised and encoded "
        f"{len(features)} products in {seconds:.1f}s "
        f"({1e6 * seconds / len(features):.0f} us per product)",
    )
    summary = {"catalog_rows": products.report.rows, "valid_products": len(features)}
    near = None
    if neighbours:
        start = time.perf_counter()
        mix = teacher or default_teacher(list(dense))
        check_teacher(mix, list(dense))
        near = teacher_neighbours(
            feature_text(products.valid, list(TEXT_FEATURES)),
            dict(zip(dense, features.dense)),
            mix,
            neighbours,
        )
        if mutual:
            near = mutual_neighbours(near)
            summary["mutual_neighbours"] = int((near >= 0).sum())
        summary["neighbours_s"] = time.perf_counter() - start
        summary["teacher"] = mix
        _log(
            progress,
            f"{near.shape[1]} nearest neighbours of each product by "
            f"{' + '.join(f'{w:g} {name}' for name, w in mix.items())} in "
            f"{summary['neighbours_s']:.1f}s",
        )
    return TrainingData(
        vocab=vocab,
        features=features,
        train=None,
        heldout=None,
        summary=summary,
        neighbours=near,
        dense=dense,
    )


def _learning_rate(config: TrainConfig, step: int, total: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
    return config.learning_rate * (0.1 + 0.45 * (1 + math.cos(math.pi * min(progress, 1.0))))


def objectives_for(data: TrainingData, config: TrainConfig) -> list[SourcedObjective]:
    """The objectives config.objective_weights chooses (engagements when the data has examples),
    on the data in memory."""
    weights = objective_weights(config, engagements=data.train is not None)
    if CATALOG in weights and config.neighbours and data.neighbours is None:
        raise ItemSageError(
            "the catalog objective pairs products with their teacher's neighbours: "
            "prepare the data with neighbours > 0, or train with neighbours 0"
        )
    neighbours = data.neighbours if config.neighbours else None
    sources = {
        ENGAGEMENTS: lambda: ExampleBatches(data.features, _chosen(data, config), config),
        CATALOG: lambda: CatalogBatches(data.features, config, neighbours),
    }
    return [SourcedObjective(sources[name](), w, config) for name, w in weights.items()]


def _chosen(data: TrainingData, config: TrainConfig) -> Examples:
    """The training examples of the tasks `config` trains on."""
    examples = data.train.subset(np.isin(data.train.tasks, [TASKS.index(t) for t in config.tasks]))
    if len(examples) == 0:
        raise ItemSageError(f"no training examples for tasks {', '.join(config.tasks)}")
    return examples


def train(
    data: TrainingData,
    model_config: ModelConfig,
    config: TrainConfig,
    progress: Progress | None = None,
    device: str = "auto",
    loop: LoopConfig = LoopConfig(),
    fingerprint: dict | None = None,
) -> tuple[ItemSageEncoder, dict]:
    """Train a fresh encoder; returns it (in eval mode) and the training history."""
    dev = pick_device(device)
    return train_objectives(
        objectives_for(data, config), model_config, config, dev, progress, loop, fingerprint
    )


class _DataParallel(DistributedDataParallel):
    """DDP that lets the objectives read the encoder's temperature as they do unwrapped."""

    @property
    def temperature(self) -> torch.Tensor:
        return self.module.temperature


def process_group() -> tuple[int, int]:
    """(rank, world size): of the torch.distributed process group when one is up, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gathered(value: object) -> list:
    """`value` of every process of the group, in rank order (collective: every rank calls)."""
    rank, world = process_group()
    if world == 1:
        return [value]
    out = [None] * world
    dist.all_gather_object(out, value)
    return out


def train_objectives(
    objectives: Sequence[Objective],
    model_config: ModelConfig,
    config: TrainConfig,
    dev: torch.device,
    progress: Progress | None = None,
    loop: LoopConfig = LoopConfig(),
    fingerprint: dict | None = None,
) -> tuple[ItemSageEncoder, dict]:
    """Train a fresh encoder (or resume one: `loop`) on weighted objectives, in memory or
    streamed (objectives.py); data-parallel when a torch.distributed process group is
    up, each process with its own objectives. Returns the encoder (in eval mode) and the
    training history."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(dev.type == "cpu")  # bit-reproducible on CPU
    try:
        return _train(objectives, model_config, config, dev, progress, loop, fingerprint or {})
    finally:
        torch.use_deterministic_algorithms(previous)


def _resumed(
    loop: LoopConfig,
    fingerprint: dict,
    encoder: ItemSageEncoder,
    optimizer: torch.optim.Optimizer,
    rng: np.random.Generator,
    objectives: Sequence[Objective],
    progress: Progress | None,
) -> tuple[int, list]:
    """The step to start from and the history so far: 0 and none, or those of the newest state
    saved in `loop.state_dir`, loaded into the encoder, optimiser, RNGs and objectives."""
    state = latest_train_state(loop.state_dir, fingerprint) if loop.resume else None
    steps = set(gathered(state.step if state else None))
    if len(steps) > 1:  # every process must go on from the same step, or they wait forever
        raise ItemSageError(
            f"the training processes found different states in {loop.state_dir} (steps "
            f"{sorted(steps, key=str)}): --state-dir must be one directory they all share"
        )
    if state is None:
        if loop.resume:
            _log(progress, f"no saved state in {loop.state_dir}: starting from step 0")
        return 0, []
    rank, _ = process_group()
    encoder.load_state_dict(state.model)
    optimizer.load_state_dict(state.optimizer)
    set_random_state(rng, state.processes[rank]["random_state"])
    for objective, position in zip(objectives, state.processes[rank]["positions"]):
        objective.restore(position)
    _log(progress, f"resuming from step {state.step}, saved in {loop.state_dir}")
    return state.step, state.history


def _train(
    objectives: Sequence[Objective],
    model_config: ModelConfig,
    config: TrainConfig,
    dev: torch.device,
    progress: Progress | None,
    loop: LoopConfig,
    fingerprint: dict,
) -> tuple[ItemSageEncoder, dict]:
    rank, world = process_group()
    torch.manual_seed(config.seed)
    rng = (
        np.random.default_rng(config.seed) if world == 1 else tagged_rng(config.seed, TRAINER, rank)
    )
    if loop.state_dir and not loop.resume and rank == 0:
        clear_train_states(loop.state_dir)
    encoder = ItemSageEncoder(model_config).to(dev).train()
    optimizer = torch.optim.AdamW(
        encoder.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    steps_per_epoch = objectives[0].steps_per_epoch()
    total = steps_per_epoch * config.epochs
    if loop.max_steps:
        total = min(total, loop.max_steps)
    fingerprint = {**fingerprint, "train": config.to_dict(), "world": world, "steps": total}
    first, history = _resumed(loop, fingerprint, encoder, optimizer, rng, objectives, progress)
    model = encoder
    if world > 1:
        model = _DataParallel(encoder, device_ids=[dev.index] if dev.type == "cuda" else None)
    examples_per_step = sum(o.batch for o in objectives) * world
    _log(
        progress,
        "training on "
        + " + ".join(
            (f"{o.weight:g} x " if o.weight != 1 else "") + o.describe() for o in objectives
        )
        + (f" in each of {world} processes" if world > 1 else "")
        + f", {total} steps ({steps_per_epoch} an epoch), device {dev}",
    )
    started, last_report = time.perf_counter(), time.perf_counter()
    window = {"loss": 0.0, **{o.name: 0.0 for o in objectives}}
    window_steps = 0
    record_every = max(1, total // HISTORY_POINTS)
    for step in range(first, total):
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(config, step, total)
        parts = [(o.weight, o.name, o.loss(model, rng)) for o in objectives]
        loss = sum(weight * part.total for weight, _, part in parts)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # under DDP the gradients are averaged over the processes here
        optimizer.step()
        window["loss"] += loss.item()
        for _, name, part in parts:
            window[name] += part.total.item()
        window_steps += 1
        done = step + 1 == total
        epoch_end = (step + 1) % steps_per_epoch == 0
        if epoch_end or done or (step + 1) % record_every == 0:
            elapsed = time.perf_counter() - started
            entry = {
                "step": step + 1,
                "epoch": step / steps_per_epoch,
                **{k: v / window_steps for k, v in window.items()},
                "temperature": encoder.temperature.item(),
                "examples_per_s": (step + 1 - first) * examples_per_step / elapsed,
            }
            history.append(entry)
            window = dict.fromkeys(window, 0.0)
            window_steps = 0
        if window_steps == 0 and (epoch_end or done or time.perf_counter() - last_report > 10):
            losses = (
                ", ".join(f"{name} {entry[name]:.4f}" for o in objectives for name in [o.name])
                if len(objectives) > 1
                else ""
            )
            _log(
                progress,
                f"epoch {step // steps_per_epoch + 1}/{math.ceil(total / steps_per_epoch)} step "
                f"{step % steps_per_epoch + 1}/{steps_per_epoch}: loss {entry['loss']:.4f}"
                + (f" ({losses})" if losses else "")
                + f", temperature {entry['temperature']:.4f}, "
                f"{entry['examples_per_s']:.0f} examples/s",
            )
            last_report = time.perf_counter()
        if loop.checkpoint_every and (step + 1) % loop.checkpoint_every == 0 and not done:
            _save_state(loop, step + 1, encoder, optimizer, rng, objectives, history, fingerprint)
    encoder.eval()
    return encoder, {
        "history": history,
        "seconds": time.perf_counter() - started,
        "examples": len(objectives[0]),
        "steps": total,
        "resumed_from_step": first,
        "processes": world,
    }


def _save_state(
    loop: LoopConfig,
    step: int,
    encoder: ItemSageEncoder,
    optimizer: torch.optim.Optimizer,
    rng: np.random.Generator,
    objectives: Sequence[Objective],
    history: list,
    fingerprint: dict,
) -> None:
    """Save the run's state after `step` (rank 0 writes it, with every rank's RNG and stream
    positions; the model and optimiser are the same in every rank)."""
    processes = gathered(
        {"random_state": random_state(rng), "positions": [o.position() for o in objectives]}
    )
    if process_group()[0] == 0:
        state = TrainState(
            step=step,
            model=encoder.state_dict(),
            optimizer=optimizer.state_dict(),
            processes=processes,
            history=history,
            fingerprint=fingerprint,
        )
        save_train_state(loop.state_dir, state)
