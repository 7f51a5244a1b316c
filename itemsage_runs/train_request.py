"""`itemsage train`'s request: every option as given (strings, flags, sizes), its defaults read
from the configs it fills, and `training_run()`, the one place the options become a TrainRun
(parsed lists, the model's shape, the epochs' default by objective). No PyTorch here."""

from __future__ import annotations

import dataclasses

from itemsage_core.contracts.catalog_contract import DEFAULT_IMAGE_DIM
from itemsage_core.errors import OptionError
from itemsage_core.features.vocabulary import VocabConfig
from itemsage_core.model.config import ModelConfig
from itemsage_core.storage.uris import sibling
from itemsage_core.training.config import (
    CATALOG_EPOCHS,
    LoopConfig,
    PrepareConfig,
    StreamConfig,
    TrainConfig,
    TrainRun,
)
from itemsage_runs import preflight
from itemsage_runs.defaults import default

VOCAB_SIZES = ",".join(str(default(VocabConfig, k)) for k in ("unigrams", "bigrams", "trigrams"))
# Options only training on Spark reads, by flag.
SPARK_ONLY = {
    "prepared": "--prepared",
    "shuffle_buffer": "--shuffle-buffer",
    "negative_pool": "--negative-pool",
    "neighbour_max_df": "--neighbour-max-df",
    "conf": "--conf",
}


def _train(name: str):
    return default(TrainConfig, name)


def _model(name: str):
    return default(ModelConfig, name)


@dataclasses.dataclass(frozen=True)
class TrainRequest:
    """One `itemsage train`: inputs, output, the run's settings and where it runs (in this
    process, or on Spark with `num_processes`, a `master` or under spark-submit)."""

    catalog: str
    out: str  # a directory or a URI
    engagements: str | None = None
    mapping: str | None = None
    modalities: str = ",".join(_model("modalities"))
    tasks: str = "all"
    task_weights: tuple[str, ...] = ()  # TASK=WEIGHT
    task_exponent: float = _train("task_exponent")
    catalog_task_weight: float = _train("catalog_task_weight")
    neighbours: int = _train("neighbours")
    teacher: str | None = None  # NAME=W,...
    mutual_neighbours: bool = _train("mutual_neighbours")
    neighbour_share: float = _train("neighbour_share")
    exclude_features: tuple[str, ...] = ()
    epochs: int | None = None  # None: by objective (TrainConfig's, or CATALOG_EPOCHS)
    batch_size: int = _train("batch_size")
    random_negatives: int = _train("random_negatives")
    learning_rate: float = _train("learning_rate")
    holdout_fraction: float = _train("holdout_fraction")
    seed: int = _train("seed")
    d_model: int = _model("d_model")
    ffn_dim: int = _model("ffn_dim")
    layers: int = _model("layers")
    hash_buckets: int = _model("hash_buckets")
    vocab_sizes: str = VOCAB_SIZES  # UNI,BI,TRI
    vocab_catalogs: tuple[str, ...] = ()
    vocab_mappings: tuple[str, ...] = ()
    image_dim: int = DEFAULT_IMAGE_DIM
    device: str = default(TrainRun, "device")
    precision: str = _train("precision")
    max_steps: int | None = None
    checkpoint_every: int = default(LoopConfig, "checkpoint_every")
    state_dir: str | None = None  # None: OUT.state beside out
    resume: bool = False
    num_processes: int | None = None
    prepared: str | None = None  # None: OUT.prepared beside out
    shuffle_buffer: int = default(StreamConfig, "shuffle_buffer")
    negative_pool: int = default(StreamConfig, "negatives")
    neighbour_max_df: int = default(PrepareConfig, "neighbour_max_df")
    master: str | None = None
    conf: tuple[str, ...] = ()

    def spark_only_given(self) -> list[str]:
        """The flags given that only training on Spark reads."""
        return [
            flag
            for name, flag in SPARK_ONLY.items()
            if getattr(self, name) != default(TrainRequest, name)
        ]

    def training_run(self) -> TrainRun:
        """The TrainRun these options make; a bad combination is an OptionError."""
        from itemsage_core.features.teacher_neighbours import parse_teacher
        from itemsage_core.training.training_examples import parse_tasks

        if self.d_model % 8:
            raise OptionError(f"--d-model {self.d_model} is not divisible by 8 heads")
        if self.catalog_task_weight and not self.engagements:
            raise OptionError(
                "--catalog-task-weight weighs the catalog objective beside --engagements; "
                "without a log the catalog objective is the only one"
            )
        engaged = default(TrainConfig, "epochs") if self.engagements else CATALOG_EPOCHS
        same = ("batch_size", "random_negatives", "learning_rate", "holdout_fraction", "seed",
                "task_exponent", "catalog_task_weight", "neighbours", "mutual_neighbours",
                "neighbour_share", "precision")  # fmt: skip
        config = TrainConfig(
            epochs=self.epochs or engaged,
            tasks=parse_tasks(self.tasks),
            task_weights=parse_task_weights(self.task_weights),
            teacher=parse_teacher(self.teacher) if self.teacher else (),
            **{name: getattr(self, name) for name in same},
        )
        shape = {"d_model": self.d_model, "ffn_dim": self.ffn_dim, "layers": self.layers,
                 "mlp_hidden": self.d_model, "hash_buckets": self.hash_buckets,
                 "modalities": tuple(self.modalities.split(","))}  # fmt: skip
        state_dir = self.state_dir or sibling(self.out, ".state")
        return TrainRun(
            catalog=self.catalog,
            out=self.out,
            engagements=self.engagements,
            mapping=preflight.mapping(self.mapping),
            train=config,
            model_options=tuple(shape.items()),
            vocab=vocab_config(self.vocab_sizes),
            image_dim=self.image_dim,
            hash_seed=self.seed,
            device=self.device,
            vocab_catalogs=self.vocab_catalogs,
            vocab_mappings=tuple(preflight.mapping(path) for path in self.vocab_mappings),
            exclude_features=self.exclude_features,
            loop=LoopConfig(self.max_steps, self.checkpoint_every, state_dir, self.resume),
        )


def vocab_config(sizes: str) -> VocabConfig:
    """UNI,BI,TRI (--vocab) as a VocabConfig."""
    try:
        uni, bi, tri = (int(x) for x in sizes.split(","))
    except ValueError:
        raise OptionError(f"--vocab '{sizes}' is not three integers UNI,BI,TRI") from None
    return VocabConfig(unigrams=uni, bigrams=bi, trigrams=tri)


def parse_task_weights(values: tuple[str, ...]) -> tuple[tuple[str, float], ...]:
    """TASK=WEIGHT values (--task-weight) as (task, weight) pairs, a TASK naming several
    tasks giving each the weight."""
    from itemsage_core.training.training_examples import parse_tasks

    weights = []
    for value in values:
        name, sep, weight = value.partition("=")
        try:
            number = float(weight)
        except ValueError:
            number = -1.0
        if not sep or number < 0:
            raise OptionError(f"--task-weight '{value}' is not TASK=WEIGHT with WEIGHT >= 0")
        weights += [(task, number) for task in parse_tasks(name)]
    return tuple(weights)
