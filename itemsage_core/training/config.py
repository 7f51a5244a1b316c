"""A training run's settings as plain data (no PyTorch), so the CLI can take its option
defaults from here without loading the trainer: TrainConfig (optimisation and data), ViewConfig
(the catalog objective's two views of a product), LoopConfig (how long a run goes, where it
keeps its state to resume from), StreamConfig (the memory bounds of streaming), TrainRun
(inputs, output, every setting), and `objective_weights`, the one rule for which objectives a
run trains."""

from __future__ import annotations

import dataclasses

from itemsage_core.contracts.catalog_contract import DEFAULT_IMAGE_DIM
from itemsage_core.contracts.column_mapping import ColumnMapping
from itemsage_core.contracts.engagement_contract import DEFAULT_QUERY_DIM
from itemsage_core.features.lexical_neighbours import DEFAULT_NEIGHBOURS
from itemsage_core.features.vocabulary import VocabConfig
from itemsage_core.training.training_examples import TASKS

CATALOG_EPOCHS = 10  # passes over the catalog when it is the only objective (docs/model.md)
RECALL_K = 10  # neighbours per query in every evaluation (Recall@10, label agreement@10)
HELDOUT_INDEX_SIZE = 100_000  # at most this many products to retrieve from in `evaluate`
CATALOG_QUERIES = 2000  # query products sampled by `evaluate-catalog`
ENGAGEMENTS, CATALOG = "engagements", "catalog"  # the objectives a run can train


@dataclasses.dataclass(frozen=True)
class ViewConfig:
    """The catalog objective's two views of a product (training/catalog_views.py)."""

    token_drop: float = 0.3
    split: bool = True
    feature_drop: float = 0.3  # each view's share of units dropped when not `split`


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
    catalog_task_weight: float = 0.0
    views: ViewConfig = ViewConfig()
    neighbours: int = DEFAULT_NEIGHBOURS
    neighbour_share: float = 1.0
    teacher: tuple[tuple[str, float], ...] = ()  # () = teacher_neighbours.default_teacher
    mutual_neighbours: bool = False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def objective_weights(train: TrainConfig, engagements: bool) -> dict[str, float]:
    """The objectives a run trains, by name, each with its weight in the loss: with an engagement
    log the engagement objective, and the catalog objective beside it at `catalog_task_weight`
    when that is above 0; without a log the catalog objective alone."""
    if not engagements:
        return {CATALOG: 1.0}
    weights = {ENGAGEMENTS: 1.0}
    if train.catalog_task_weight > 0:
        weights[CATALOG] = train.catalog_task_weight
    return weights


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """How far a run goes and how it survives a kill (training/train_state.py): the run stops
    after `max_steps` (when set) and, with `state_dir`, saves its whole state there every
    `checkpoint_every` steps; `resume` continues from the last complete state saved there."""

    max_steps: int | None = None
    checkpoint_every: int = 0  # 0: never
    state_dir: str | None = None  # a path or a URI
    resume: bool = False


@dataclasses.dataclass(frozen=True)
class StreamConfig:
    """Memory bounds of a stream of prepared data (training/streaming.py)."""

    shuffle_buffer: int = 20_000  # examples held for shuffling
    negatives: int = 50_000  # random products held for negatives


@dataclasses.dataclass(frozen=True)
class TrainRun:
    """One training run: its inputs and output, and every setting (`itemsage train`'s options).

    Without `engagements` the model learns from the catalog alone (`objectives`).
    `vocab_catalogs` (through `vocab_mappings`, see mappings_for): other catalogs whose text
    joins the vocabulary. `exclude_features`: text features withheld from training (and so from
    the vocabulary). `model_options`: ModelConfig fields (d_model, layers, ...).
    """

    catalog: str
    out: str  # a path or a URI
    engagements: str | None = None
    mapping: ColumnMapping | None = None  # loaded (load_mapping), as in every job config
    train: TrainConfig = TrainConfig()
    model_options: tuple[tuple[str, object], ...] = ()
    vocab: VocabConfig = VocabConfig()
    image_dim: int = DEFAULT_IMAGE_DIM
    hash_seed: int = 0
    device: str = "auto"
    vocab_catalogs: tuple[str, ...] = ()
    vocab_mappings: tuple[ColumnMapping, ...] = ()
    exclude_features: tuple[str, ...] = ()
    loop: LoopConfig = LoopConfig()

    def objectives(self) -> dict[str, float]:
        """The objectives the run trains, with their weights (objective_weights)."""
        return objective_weights(self.train, bool(self.engagements))

    def neighbours(self) -> int:
        """Teacher neighbours per product its data needs: the catalog objective's, else none."""
        return self.train.neighbours if CATALOG in self.objectives() else 0


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    """`itemsage prepare-training`'s options (docs/model.md)."""

    catalog: str
    engagements: str | None
    out: str
    mapping: ColumnMapping | None = None
    vocab: VocabConfig = VocabConfig()
    holdout_fraction: float = 0.1
    image_dim: int = DEFAULT_IMAGE_DIM
    query_dim: int = DEFAULT_QUERY_DIM
    shards: int = 0  # 0: as many as the session's default parallelism
    seed: int = 0
    neighbours: int = 0  # lexical neighbours per product for the catalog objective (0: none)
    neighbour_max_df: int = 1000  # terms in more products make no pairs (docs/training.md)
    pairs_per_product: int = 2  # catalog pairs written per product, each a random neighbour

    @classmethod
    def for_run(cls, run: TrainRun, data_dir: str, neighbour_max_df: int) -> PrepareConfig:
        """The preparation of `run`'s data into `data_dir`: its inputs, split, vocabulary, seed
        and the teacher neighbours its objectives need."""
        return cls(
            catalog=run.catalog,
            engagements=run.engagements,
            out=data_dir,
            mapping=run.mapping,
            vocab=run.vocab,
            holdout_fraction=run.train.holdout_fraction,
            image_dim=run.image_dim,
            seed=run.train.seed,
            neighbours=run.neighbours(),
            neighbour_max_df=neighbour_max_df,
        )
