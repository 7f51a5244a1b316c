"""`itemsage demo`'s options (DemoConfig), the small model it trains and where it writes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from itemsage_cli.report_command import report_location

PROJECT_CONF = Path(__file__).resolve().parents[1] / "conf"

# Small enough to train in about a minute on 2 cores; the paper's shape is `itemsage train`'s
# default.
DEMO_MODEL = {"d_model": 128, "ffn_dim": 512, "layers": 1, "hash_buckets": 20_000}
DEMO_VOCAB = "20000,40000,10000"  # unigrams, bigrams, trigrams per text feature
SURFACES = PROJECT_CONF / "surfaces.toml"


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """`itemsage demo`'s options. Without `catalog`, a synthetic world of `products` products."""

    workdir: Path = Path("itemsage-demo")
    products: int = 10_000
    seed: int = 0
    epochs: int | None = None  # None: TrainConfig's default, or CATALOG_EPOCHS with a catalog
    master: str | None = None
    conf: tuple[str, ...] = ()
    catalog: str | None = None
    mapping: str | None = None
    surfaces: str = str(SURFACES)
    label_column: str | None = None
    text_model: str | None = None  # featurize --catalog with this sentence encoder first

    @property
    def paths(self) -> dict[str, Path]:
        """Where the demo writes each artefact, under workdir."""
        root = self.workdir
        return {
            "world": root / "world",
            "featurized": root / "featurized",
            "model": root / "model",
            "embeddings": root / "tables" / "embeddings",
            "indexes": root / "indexes",
            "neighbours": root / "tables" / "neighbours",
            "report": Path(report_location(str(root / "indexes"))),
        }

    def train_epochs(self) -> int:
        from itemsage_core.training.config import CATALOG_EPOCHS, TrainConfig

        return self.epochs or (CATALOG_EPOCHS if self.catalog else TrainConfig().epochs)
