"""Train-and-save and load-and-evaluate, from Parquet paths to a checkpoint and a report.

These back `itemsage train`, `itemsage evaluate` and `itemsage evaluate-catalog`; they read the
catalog (optionally through a column mapping) and the engagement log in-process.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pyarrow as pa

from itemsage_core.contracts.catalog_contract import (
    TEXT_FEATURES,
    conform_catalog,
    require_text_features,
)
from itemsage_core.contracts.column_mapping import ColumnMapping, mapped
from itemsage_core.contracts.dense_features import dense_columns, require_dense
from itemsage_core.errors import ItemSageError
from itemsage_core.features.sentence_text import SentenceEncoder, fetch_model
from itemsage_core.features.vocabulary import VocabConfig, Vocabulary, build_vocabulary
from itemsage_core.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from itemsage_core.model.config import ModelConfig
from itemsage_core.storage.parquet_io import read_parquet
from itemsage_core.training.catalog_quality import CatalogQuality, evaluate_catalog
from itemsage_core.training.config import (
    CATALOG_QUERIES,
    HELDOUT_INDEX_SIZE,
    RECALL_K,
    TrainRun,
)
from itemsage_core.training.evaluation import Evaluation, evaluate, evaluate_prepared
from itemsage_core.training.prepared_data import read_prepared_manifest, read_prepared_vocab
from itemsage_core.training.trainer import (
    Progress,
    TrainingData,
    prepare_catalog_data,
    prepare_data,
    train,
)


def read_mapped_catalog(path: str, mapping: ColumnMapping | None = None) -> pa.Table:
    """A catalog in memory, through its column mapping when one is given."""
    return mapped(read_parquet(path), mapping)


def catalog_for_model(path: str, mapping: ColumnMapping | None, checkpoint: Checkpoint) -> pa.Table:
    """read_mapped_catalog, once it is known to declare the dense features the model reads."""
    table = read_mapped_catalog(path, mapping)
    require_dense(dense_columns(table.schema), checkpoint.model.config.dense_dims, path)
    return table


def without_features(catalog: pa.Table, features: tuple[str, ...]) -> pa.Table:
    """The catalog without the named text features (withheld from training and evaluation)."""
    require_text_features(features)
    return catalog.drop_columns([f for f in features if f in catalog.column_names])


@dataclasses.dataclass
class TrainedModel:
    path: str  # a directory or a URI
    model_version: str
    evaluation: Evaluation | None  # None without an engagement log
    summary: dict


def text_vocabulary(catalogs: list[pa.Table], config: VocabConfig) -> Vocabulary:
    """One vocabulary over the text features of several (mapped) catalogs."""
    texts = [conform_catalog(c).select(list(TEXT_FEATURES)) for c in catalogs]
    return build_vocabulary(pa.concat_tables(texts), config)


def mappings_for(
    catalogs: tuple[str, ...], mappings: tuple[ColumnMapping, ...]
) -> list[ColumnMapping | None]:
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


def _vocabulary_catalogs(run: TrainRun, products: pa.Table) -> tuple[Vocabulary | None, dict]:
    """The vocabulary over the training catalog and run.vocab_catalogs (None when there are
    none: the trainer builds it from the training products), and the rows each catalog gave."""
    if not run.vocab_catalogs:
        return None, {}
    mappings = mappings_for(run.vocab_catalogs, run.vocab_mappings)
    others = [
        without_features(read_mapped_catalog(path, mapping), run.exclude_features)
        for path, mapping in zip(run.vocab_catalogs, mappings)
    ]
    vocab = text_vocabulary([products, *others], run.vocab)
    rows = {path: other.num_rows for path, other in zip(run.vocab_catalogs, others)}
    return vocab, {"vocab_catalogs": rows, "vocab_tokens": vocab.size}


def _training_data(run: TrainRun, progress: Progress | None) -> TrainingData:
    """The run's encoded products (and engagement examples), with the vocabulary catalogs'
    contribution in the data summary."""
    products = without_features(read_mapped_catalog(run.catalog, run.mapping), run.exclude_features)
    vocab, extra = _vocabulary_catalogs(run, products)
    common = {
        "vocab": vocab,
        "vocab_config": run.vocab,
        "image_dim": run.image_dim,
        "neighbours": run.neighbours(),
        "progress": progress,
        "teacher": dict(run.train.teacher) or None,
        "mutual": run.train.mutual_neighbours,
    }
    if run.engagements:
        engagements = read_parquet(run.engagements)
        data = prepare_data(products, engagements, run.train.holdout_fraction, **common)
    else:
        data = prepare_catalog_data(products, **common)
    if vocab is not None:  # the tokens no valid training product holds came from them
        only_there = vocab.size - len(np.unique(data.features.bags.ids))
        extra["vocab_tokens_from_vocab_catalogs"] = only_there
        if progress:
            read = ", ".join(f"{p} ({n} rows)" for p, n in extra["vocab_catalogs"].items())
            progress(
                f"vocabulary of {vocab.size} tokens over {run.catalog} ({products.num_rows} "
                f"rows) and {read}: {only_there} tokens occur only in the vocabulary catalogs"
            )
    data.summary.update(extra)
    return data


def checkpoint_settings(run: TrainRun) -> dict:
    """The training settings a checkpoint records (its config.json beside the model's)."""
    return {
        "vocab": dataclasses.asdict(run.vocab),
        "train": run.train.to_dict(),
        "image_dim": run.image_dim,
        "objective": "+".join(run.objectives()),
        "excluded_features": list(run.exclude_features),
    }


def train_model(run: TrainRun, progress: Progress | None = None) -> TrainedModel:
    """Train, evaluate on the held-out slice of the log (when there is one), save a checkpoint."""
    started = time.perf_counter()
    data = _training_data(run, progress)
    model_config = ModelConfig.create(
        data.vocab.size,
        hash_seed=run.hash_seed,
        image_dim=run.image_dim,
        dense=tuple(data.dense.items()),
        **dict(run.model_options),
    )
    counts = {k: v for k, v in data.summary.items() if isinstance(v, int)}
    fingerprint = {"model": model_config.to_dict(), "data": counts}
    model, history = train(
        data, model_config, run.train, progress, run.device, run.loop, fingerprint
    )
    result = None
    if data.heldout is not None:
        if progress:
            progress(f"evaluating on {len(data.heldout)} held-out examples")
        result = evaluate(model, data.features, data.heldout)
    summary = {
        "data": data.summary,
        "training": history,
        "heldout": result.to_dict() if result else None,
        "seconds": time.perf_counter() - started,
    }
    version = save_checkpoint(run.out, model.cpu(), data.vocab, checkpoint_settings(run), summary)
    return TrainedModel(run.out, version, result, summary)


def evaluate_model(
    model_dir: str,
    catalog: str,
    engagements: str,
    mapping: ColumnMapping | None = None,
    index_size: int = HELDOUT_INDEX_SIZE,
    k: int = RECALL_K,
    progress: Progress | None = None,
) -> tuple[str, Evaluation]:
    """Recall@k of a checkpoint on the held-out slice of an engagement log (same split rule)."""
    checkpoint = load_checkpoint(model_dir)
    settings = checkpoint.config
    data = prepare_data(
        catalog_for_model(catalog, mapping, checkpoint),
        read_parquet(engagements),
        settings["train"]["holdout_fraction"],
        vocab=checkpoint.vocab,
        image_dim=settings["image_dim"],
        progress=progress,
        dense=checkpoint.model.config.dense_dims,
    )
    if progress:
        progress(f"evaluating {checkpoint.model_version} on {len(data.heldout)} held-out examples")
    return checkpoint.model_version, evaluate(
        checkpoint.model, data.features, data.heldout, k=k, index_size=index_size
    )


def evaluate_prepared_model(
    model_dir: str,
    data_dir: str,
    index_size: int = HELDOUT_INDEX_SIZE,
    k: int = RECALL_K,
    progress: Progress | None = None,
) -> tuple[str, Evaluation]:
    """Recall@k of a checkpoint on the held-out examples of prepared data; the data must have
    been prepared with the checkpoint's vocabulary (as `train --num-processes` does)."""
    checkpoint = load_checkpoint(model_dir)
    vocab = read_prepared_vocab(data_dir, read_prepared_manifest(data_dir))
    if vocab.to_json() != checkpoint.vocab.to_json():
        raise ItemSageError(
            f"{data_dir} was prepared with another vocabulary than {model_dir}'s; evaluate "
            "with --catalog and --engagements, or prepare with the model's --vocab"
        )
    if progress:
        progress(f"evaluating {checkpoint.model_version} on the held-out examples in {data_dir}")
    return checkpoint.model_version, evaluate_prepared(
        checkpoint.model, data_dir, k=k, index_size=index_size
    )


def evaluate_catalog_model(
    model_dir: str,
    catalog: str,
    label_column: str,
    mapping: ColumnMapping | None = None,
    exclude_features: tuple[str, ...] = (),
    queries: int = CATALOG_QUERIES,
    k: int = RECALL_K,
    progress: Progress | None = None,
    baseline_models: tuple[str, ...] = (),
) -> tuple[str, CatalogQuality]:
    """Label agreement of a checkpoint's neighbours on a catalog, beside TF-IDF, the sentence
    encoders `baseline_models` (folders or URIs; each a row named after its folder) and random."""
    baselines = {}
    for source in baseline_models:
        encoder = SentenceEncoder.load(fetch_model(source))
        baselines[source.rstrip("/").rsplit("/", 1)[-1]] = encoder.encode
    checkpoint = load_checkpoint(model_dir)
    table = catalog_for_model(catalog, mapping, checkpoint)
    if progress:
        progress(
            f"evaluating {checkpoint.model_version} on {catalog} ({table.num_rows} rows): "
            f"neighbours of {min(queries, table.num_rows)} products by the model, TF-IDF"
            f"{''.join(f', {name}' for name in baselines)} and random"
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
        baselines=baselines,
    )
