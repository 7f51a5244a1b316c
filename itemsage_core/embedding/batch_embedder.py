"""Embedding catalog batches with a checkpoint: the per-worker piece of the embedding job.

`BatchEmbedder.for_model` loads a checkpoint once per process, model_version and device (Spark
reuses its Python workers, so one load serves many tasks). `embed` takes a conformed, validated
catalog batch and returns rows of the embeddings table, encoding in batches of `batch_size`
products (independent of Spark's Arrow batch size) with the exact [CLS]-only path. The
vocabulary coverage of the encoded text is added into a `coverage` dict the caller passes (one per
task: the embedder itself is shared by the tasks of a worker and keeps no counts).
"""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from itemsage_core.contracts.arrow_checks import valid_utf8
from itemsage_core.contracts.catalog_contract import PRODUCT_ID
from itemsage_core.embedding.content_hash import content_hashes
from itemsage_core.embedding.embeddings_table import (
    EMBEDDING_SCHEMA,
    QUARANTINE_SCHEMA,
    vector_column,
)
from itemsage_core.features.product_features import encode_products
from itemsage_core.features.vocab_coverage import Counts, add_coverage
from itemsage_core.model.checkpoint import Checkpoint, load_checkpoint
from itemsage_core.model.inference import embed_features, pick_device

_LOADED: dict[tuple[str, str], Checkpoint] = {}


class BatchEmbedder:
    def __init__(
        self, checkpoint: Checkpoint, batch_size: int, device: torch.device, precision: str
    ):
        self.checkpoint, self.batch_size = checkpoint, batch_size
        self.device, self.precision = device, precision

    @classmethod
    def for_model(
        cls,
        model_dir: str,
        model_version: str,
        batch_size: int = 512,
        device: str = "auto",
        precision: str = "fp32",
    ) -> BatchEmbedder:
        chosen = pick_device(device)
        key = (str(model_dir), model_version, str(chosen))  # one copy per device
        if key not in _LOADED:
            checkpoint = load_checkpoint(model_dir)
            if checkpoint.model_version != model_version:
                raise ValueError(
                    f"{model_dir} holds {checkpoint.model_version}, expected {model_version}"
                )
            checkpoint.model.to(chosen)
            _LOADED[key] = checkpoint
        return cls(_LOADED[key], batch_size, chosen, precision)

    @property
    def model_version(self) -> str:
        return self.checkpoint.model_version

    def vectors(self, table: pa.Table, coverage: Counts | None = None) -> np.ndarray:
        """Embeddings of a conformed batch; its coverage counts are added into `coverage`."""
        features = encode_products(
            table,
            self.checkpoint.vocab,
            self.checkpoint.config["image_dim"],
            self.checkpoint.model.config.dense_dims,
        )
        if coverage is not None:
            add_coverage(coverage, features.bags.coverage)
        return embed_features(
            self.checkpoint.model,
            features,
            batch_size=self.batch_size,
            device=self.device,
            precision=self.precision,
        )

    def embed_or_quarantine(
        self,
        table: pa.Table,
        reasons: pa.Array,
        run_id: str,
        at: dt.datetime,
        coverage: Counts | None = None,
    ) -> tuple[pa.Table | None, pa.Table | None]:
        """Embeddings-table rows for the rows without reasons and quarantine rows for the
        others (None where there are none): every input row comes out exactly once. The
        embedded rows' coverage counts are added into `coverage`."""
        ok = pc.is_null(reasons)
        valid = pc.sum(ok).as_py() or 0
        good = self.embed(table.filter(ok), run_id, at, coverage) if valid else None
        bad = (
            quarantine_rows(table.filter(pc.invert(ok)), reasons.filter(pc.invert(ok)), run_id, at)
            if valid < table.num_rows
            else None
        )
        return good, bad

    def embed(
        self, table: pa.Table, run_id: str, embedded_at: dt.datetime, coverage: Counts | None = None
    ) -> pa.Table:
        """Rows of the embeddings table for a conformed, validated catalog batch (its coverage
        counts added into `coverage`)."""
        vectors = self.vectors(table, coverage)
        n = len(vectors)
        return pa.table(
            {
                "product_id": table.column(PRODUCT_ID),
                "embedding": vector_column(vectors),
                "model_version": pa.array([self.model_version] * n, pa.string()),
                "content_hash": content_hashes(table),
                "run_id": pa.array([run_id] * n, pa.string()),
                "embedded_at": pa.array([embedded_at] * n, pa.timestamp("us", tz="UTC")),
            },
            schema=EMBEDDING_SCHEMA,
        )


def _is_text(t: pa.DataType) -> bool:
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _json_safe(value):
    """Non-finite floats as the strings NaN / Infinity / -Infinity (JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value).replace("nan", "NaN").replace("inf", "Infinity")
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


def quarantine_rows(table: pa.Table, reasons: pa.Array, run_id: str, at: dt.datetime) -> pa.Table:
    """Rows of the quarantine table: product_id, reason, the row as JSON, run_id, time."""
    text = [valid_utf8(c.combine_chunks()) if _is_text(c.type) else c for c in table.columns]
    raw = [
        json.dumps(_json_safe(row), default=str, ensure_ascii=False, allow_nan=False)
        for row in pa.table(text, names=table.column_names).to_pylist()
    ]
    n = table.num_rows
    return pa.table(
        {
            "product_id": table.column(PRODUCT_ID),
            "reason": reasons,
            "raw_json": raw,
            "run_id": pa.array([run_id] * n, pa.string()),
            "quarantined_at": pa.array([at] * n, pa.timestamp("us", tz="UTC")),
        },
        schema=QUARANTINE_SCHEMA,
    )
