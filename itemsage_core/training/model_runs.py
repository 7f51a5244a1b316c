"""Train-and-save and load-and-evaluate, from Parquet paths to a checkpoint and a report.

These back `itemsage train`, `itemsage evaluate` and `itemsage evaluate-catalog`; they read the
catalog (optionally through a column mapping) and the engagement log in-process.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from itemsage_core.contracts.catalog_contract import (
    DEFAULT_IMAGE_DIM,
    TEXT_FEATURES,
    conform_catalog,
    require_text_features,
)
from itemsage_core.contracts.column_mapping import load_mapping
from itemsage_core.errors import ItemSageError
from itemsage_core.features.vocabulary import VocabConfig, Vocabulary, build_vocabulary
from itemsage_core.model.checkpoint import load_checkpoint, save_checkpoint
from itemsage_core.model.encoder import ModelConfig
from itemsage_core.storage.parquet_io import read_parquet
from itemsage_core.training.catalog_quality import CatalogQuality, evaluate_catalog
from itemsage_core.training.evaluation import Evaluation, evaluate
from itemsage_core.training.trainer import (
    Progress,
    TrainConfig,
    prepare_catalog_data,
    prepare_data,
    train,
)


def read_mapped_catalog(path: str, mapping: str | None = None) -> pa.Table:
    """A catalog in memory, through its column mapping when one is given."""
    table = read_parquet(path)
    return load_mapping(mapping).apply(table) if mapping else table


def without_features(catalog: pa.Table, features: tuple[str, ...]) -> pa.Table:
    """The catalog without the named text features (withheld from training and evaluation)."""
    require_text_features(features)
    return catalog.drop_columns([f for f in features if f in catalog.column_names])


@dataclasses.dataclass
class TrainedModel:
    path: Path
    model_version: str
    evaluation: Evaluation | None  # None without an engagement log
    summary: dict


def text_vocabulary(catalogs: list[pa.Table], config: VocabConfig) -> Vocabulary:
    """One vocabulary over the text features of several (mapped) catalogs."""
    texts = [conform_catalog(c).select(list(TEXT_FEATURES)) for c in catalogs]
    return build_vocabulary(pa.concat_tables(texts), config)


def mappings_for(catalogs: tuple[str, ...], mappings: tuple[str, ...]) -> list[str | None]:
    """The mapping of each vocabulary catalog: none, one for all, or one per catalog in order."""
    if len(mappings) not in (0, 1, len(catalogs)):
        raise ItemSageError(
            f"--vocab-mapping given {len(mappings)} times for {len(catalogs)} "
            "--vocab-catalog: give none, one for all, or one per catalog"
        )
    return (
        list(mappings) * len(catalogs)
        if len(mappings) == 1
        else (list(mappings) or [None] * len(catalogs))
    )


def train_model(
    catalog: str,
    engagements: str | None,
    out: Path,
    train_config: TrainConfig,
    model_options: dict | None = None,
    vocab_config: VocabConfig = VocabConfig(),
    mapping: str | None = None,
    image_dim: int = DEFAULT_IMAGE_DIM,
    hash_seed: int = 0,
    device: str = "auto",
    vocab_catalogs: tuple[str, ...] = (),
    vocab_mappings: tuple[str, ...] = (),
    exclude_features: tuple[str, ...] = (),
    progress: Progress | None = None,
) -> TrainedModel:
    """Train, evaluate on the held-out slice of the log (when there is one), save a checkpoint.

    Without `engagements` the model learns from the catalog alone (trainer.CatalogObjective).
    `vocab_catalogs` (through `vocab_mappings`, see mappings_for): other catalogs whose text
    joins the vocabulary; the summary says how many rows each gave and how many tokens they added.
    `exclude_features`: text features withheld from training (and so from the vocabulary).
    """
    started = time.perf_counter()
    products = without_features(read_mapped_catalog(catalog, mapping), exclude_features)
    vocab, extra = None, {}
    if vocab_catalogs:
        others = [
            without_features(read_mapped_catalog(path, path_mapping), exclude_features)
            for path, path_mapping in zip(
                vocab_catalogs, mappings_for(vocab_catalogs, vocab_mappings)
            )
        ]
        vocab = text_vocabulary([products, *others], vocab_config)
        extra = {
            "vocab_catalogs": {p: o.num_rows for p, o in zip(vocab_catalogs, others)},
            "vocab_tokens": vocab.size,
        }
    catalog_task = not engagements or train_config.catalog_task_weight > 0
    neighbours = train_config.neighbours if catalog_task else 0
    if engagements:
        data = prepare_data(
            products,
            read_parquet(engagements),
            train_config.holdout_fraction,
            vocab=vocab,
            vocab_config=vocab_config,
            image_dim=image_dim,
            neighbours=neighbours,
            progress=progress,
        )
    else:
        data = prepare_catalog_data(
            products,
            vocab=vocab,
            vocab_config=vocab_config,
            image_dim=image_dim,
            neighbours=neighbours,
            progress=progress,
        )
    if vocab_catalogs:  # the tokens no valid training product holds came from them
        extra["vocab_tokens_from_vocab_catalogs"] = vocab.size - len(
            np.unique(data.features.bags.ids)
        )
        if progress:
            read = ", ".join(f"{p} ({n} rows)" for p, n in extra["vocab_catalogs"].items())
            progress(
                f"vocabulary of {vocab.size} tokens over {catalog} ({products.num_rows} "
                f"rows) and {read}: {extra['vocab_tokens_from_vocab_catalogs']} tokens "
                "occur only in the vocabulary catalogs"
            )
    model_config = ModelConfig.create(
        data.vocab.size, hash_seed=hash_seed, image_dim=image_dim, **(model_options or {})
    )
    model, history = train(data, model_config, train_config, progress=progress, device=device)
    result = None
    if data.heldout is not None:
        if progress:
            progress(f"evaluating on {len(data.heldout)} held-out examples")
        result = evaluate(model, data.features, data.heldout)
    summary = {
        "data": {**data.summary, **extra},
        "training": history,
        "heldout": result.to_dict() if result else None,
        "seconds": time.perf_counter() - started,
    }
    settings = {
        "vocab": dataclasses.asdict(vocab_config),
        "train": train_config.to_dict(),
        "image_dim": image_dim,
        "objective": (
            "catalog"
            if not engagements
            else "engagements+catalog"
            if train_config.catalog_task_weight > 0
            else "engagements"
        ),
        "excluded_features": list(exclude_features),
    }
    version = save_checkpoint(out, model.cpu(), data.vocab, settings, summary)
    return TrainedModel(path=Path(out), model_version=version, evaluation=result, summary=summary)


def evaluate_model(
    model_dir: Path,
    catalog: str,
    engagements: str,
    mapping: str | None = None,
    index_size: int = 100_000,
    k: int = 10,
    progress: Progress | None = None,
) -> tuple[str, Evaluation]:
    """Recall@k of a checkpoint on the held-out slice of an engagement log (same split rule)."""
    checkpoint = load_checkpoint(model_dir)
    settings = checkpoint.config
    data = prepare_data(
        read_mapped_catalog(catalog, mapping),
        read_parquet(engagements),
        settings["train"]["holdout_fraction"],
        vocab=checkpoint.vocab,
        image_dim=settings["image_dim"],
        progress=progress,
    )
    if progress:
        progress(f"evaluating {checkpoint.model_version} on {len(data.heldout)} held-out examples")
    return checkpoint.model_version, evaluate(
        checkpoint.model, data.features, data.heldout, k=k, index_size=index_size
    )


def evaluate_catalog_model(
    model_dir: Path,
    catalog: str,
    label_column: str,
    mapping: str | None = None,
    exclude_features: tuple[str, ...] = (),
    queries: int = 2000,
    k: int = 10,
    progress: Progress | None = None,
) -> tuple[str, CatalogQuality]:
    """Label agreement of a checkpoint's neighbours on a catalog, beside TF-IDF and random."""
    checkpoint = load_checkpoint(model_dir)
    table = read_mapped_catalog(catalog, mapping)
    if progress:
        progress(
            f"evaluating {checkpoint.model_version} on {catalog} ({table.num_rows} rows): "
            f"neighbours of {queries} products by the model and by TF-IDF"
        )
    return checkpoint.model_version, evaluate_catalog(
        checkpoint.model,
        checkpoint.vocab,
        table,
        label_column,
        checkpoint.config["image_dim"],
        exclude=tuple(exclude_features),
        queries=queries,
        k=k,
    )
