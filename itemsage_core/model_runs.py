"""Train-and-save and load-and-evaluate, from Parquet paths to a checkpoint and a report.

These back `itemsage train` and `itemsage evaluate`; both read the catalog (optionally through a
column mapping) and the engagement log in-process.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pyarrow as pa

from itemsage_core.catalog_contract import DEFAULT_IMAGE_DIM, TEXT_FEATURES, conform_catalog
from itemsage_core.checkpoint import load_checkpoint, save_checkpoint
from itemsage_core.column_mapping import load_mapping
from itemsage_core.evaluation import Evaluation, evaluate
from itemsage_core.model import ModelConfig
from itemsage_core.parquet_io import read_parquet
from itemsage_core.trainer import Progress, TrainConfig, prepare_data, train
from itemsage_core.vocabulary import VocabConfig, Vocabulary, build_vocabulary


def read_mapped_catalog(path: str, mapping: str | None = None) -> pa.Table:
    """A catalog in memory, through its column mapping when one is given."""
    table = read_parquet(path)
    return load_mapping(mapping).apply(table) if mapping else table


@dataclasses.dataclass
class TrainedModel:
    path: Path
    model_version: str
    evaluation: Evaluation
    summary: dict


def text_vocabulary(catalogs: list[pa.Table], config: VocabConfig) -> Vocabulary:
    """One vocabulary over the text features of several (mapped) catalogs."""
    texts = [conform_catalog(c).select(list(TEXT_FEATURES)) for c in catalogs]
    return build_vocabulary(pa.concat_tables(texts), config)


def train_model(catalog: str, engagements: str, out: Path, train_config: TrainConfig,
                model_options: dict | None = None, vocab_config: VocabConfig = VocabConfig(),
                mapping: str | None = None, image_dim: int = DEFAULT_IMAGE_DIM,
                hash_seed: int = 0, device: str = "auto",
                vocab_catalog: str | None = None, vocab_mapping: str | None = None,
                progress: Progress | None = None) -> TrainedModel:
    """Train on a catalog and engagement log, evaluate on the held-out slice, save a checkpoint.

    `vocab_catalog` (through `vocab_mapping`): another catalog whose text joins the vocabulary,
    for a catalog that will be embedded but has no engagements of its own.
    """
    started = time.perf_counter()
    products = read_mapped_catalog(catalog, mapping)
    vocab = None
    if vocab_catalog:
        vocab = text_vocabulary([products, read_mapped_catalog(vocab_catalog, vocab_mapping)],
                                vocab_config)
    data = prepare_data(products, read_parquet(engagements), train_config.holdout_fraction,
                        vocab=vocab, vocab_config=vocab_config, image_dim=image_dim,
                        progress=progress)
    model_config = ModelConfig.create(data.vocab.size, hash_seed=hash_seed, image_dim=image_dim,
                                      **(model_options or {}))
    model, history = train(data, model_config, train_config, progress=progress, device=device)
    if progress:
        progress(f"evaluating on {len(data.heldout)} held-out examples")
    result = evaluate(model, data.features, data.heldout)
    summary = {"data": data.summary, "training": history, "heldout": result.to_dict(),
               "seconds": time.perf_counter() - started}
    settings = {"vocab": dataclasses.asdict(vocab_config), "train": train_config.to_dict(),
                "image_dim": image_dim}
    version = save_checkpoint(out, model.cpu(), data.vocab, settings, summary)
    return TrainedModel(path=Path(out), model_version=version, evaluation=result,
                        summary=summary)


def evaluate_model(model_dir: Path, catalog: str, engagements: str, mapping: str | None = None,
                   index_size: int = 100_000, k: int = 10,
                   progress: Progress | None = None) -> tuple[str, Evaluation]:
    """Recall@k of a checkpoint on the held-out slice of an engagement log (same split rule)."""
    checkpoint = load_checkpoint(model_dir)
    settings = checkpoint.config
    data = prepare_data(read_mapped_catalog(catalog, mapping), read_parquet(engagements),
                        settings["train"]["holdout_fraction"], vocab=checkpoint.vocab,
                        image_dim=settings["image_dim"], progress=progress)
    if progress:
        progress(f"evaluating {checkpoint.model_version} on {len(data.heldout)} held-out examples")
    return checkpoint.model_version, evaluate(checkpoint.model, data.features, data.heldout,
                                              k=k, index_size=index_size)
