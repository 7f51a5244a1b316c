"""Training data as rows that can be prepared in parallel and streamed back (`itemsage
prepare-training`, jobs/training_data.py): each function here works on one batch, so a Spark task
(or one process) can run it; the layout is documented in docs/model.md.

- products (PRODUCT_SCHEMA): a valid product's encoder inputs (its token ids per text feature as
  one list with per-feature offsets, its image vectors flattened), for random negatives and
  evaluation;
- examples (EXAMPLE_SCHEMA): a valid engagement whose product is valid: the product, the task,
  the unit-length query, split into training and held-out rows by the deterministic hash of
  training_examples.holdout_mask;
- training examples (TRAIN_SCHEMA): an example with its product's encoder inputs and, per task,
  how many training examples engage that product (the logQ correction, for whatever task weights
  training then uses), so that a training step streams them without another lookup;
- catalog pairs (CATALOG_PAIR_SCHEMA): a product and a partner for the catalog objective, both
  with their encoder inputs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from itemsage_core.contracts.catalog_contract import PRODUCT_ID
from itemsage_core.contracts.engagement_contract import validate_engagements
from itemsage_core.contracts.validation_report import ValidationReport
from itemsage_core.errors import ItemSageError
from itemsage_core.features.product_features import encode_products
from itemsage_core.features.vocabulary import FEATURES, Vocabulary
from itemsage_core.storage.files import sha256_file
from itemsage_core.storage.store import Store
from itemsage_core.training.config import PrepareConfig
from itemsage_core.training.training_examples import TASKS, holdout_mask, task_ids

TASK, QUERY, HELDOUT = "task", "query", "heldout"
PRODUCT_SCHEMA = pa.schema(
    [
        pa.field(PRODUCT_ID, pa.string()),
        pa.field("token_ids", pa.list_(pa.int32())),
        pa.field("bag_offsets", pa.list_(pa.int32())),  # len(FEATURES) + 1, into token_ids
        pa.field("image_values", pa.list_(pa.float32())),  # images x image_dim
    ]
)
TASK_COUNTS = "task_counts"  # per task, the product's training examples (the logQ correction)
EXAMPLE_SCHEMA = pa.schema(
    [
        pa.field(PRODUCT_ID, pa.string()),
        pa.field(TASK, pa.int16()),  # index in TASKS
        pa.field(QUERY, pa.list_(pa.float32())),  # unit length
        pa.field(HELDOUT, pa.bool_()),
    ]
)


# A held-out example, as evaluation reads it.
HELDOUT_SCHEMA = EXAMPLE_SCHEMA.remove(EXAMPLE_SCHEMA.get_field_index(HELDOUT))
# A training example with its product: what a training step reads, without another lookup.
TRAIN_SCHEMA = pa.schema(
    [
        *HELDOUT_SCHEMA,
        *PRODUCT_SCHEMA.remove(0),
        pa.field(TASK_COUNTS, pa.list_(pa.int32())),  # len(TASKS)
    ]
)


# A product with a partner for the catalog objective (one of its lexical neighbours, or itself
# when it has none): both products' encoder inputs, the partner's under PARTNER-prefixed names.
PARTNER = "partner_"
CATALOG_PAIR_SCHEMA = pa.schema(
    [*PRODUCT_SCHEMA, *(field.with_name(PARTNER + field.name) for field in PRODUCT_SCHEMA)]
)


def partners_of(pairs: pa.Table) -> pa.Table:
    """The partners of CATALOG_PAIR_SCHEMA rows, as PRODUCT_SCHEMA rows."""
    return pa.Table.from_arrays(
        [pairs.column(PARTNER + name) for name in PRODUCT_SCHEMA.names], schema=PRODUCT_SCHEMA
    )


def product_rows(batch: pa.Table | pa.RecordBatch, vocab: Vocabulary, image_dim: int) -> pa.Table:
    """PRODUCT_SCHEMA rows of a batch of valid, conformed catalog rows."""
    features = encode_products(batch, vocab, image_dim)
    n, per_product = len(features), len(FEATURES)
    bag_offsets = features.bags.offsets
    starts = bag_offsets[: n * per_product + 1 : per_product]
    tokens = pa.ListArray.from_arrays(
        pa.array(starts, pa.int64()).cast(pa.int32()), pa.array(features.bags.ids, pa.int32())
    )
    relative = bag_offsets[: n * per_product].reshape(n, per_product) - starts[:-1, None]
    relative = np.concatenate([relative, (starts[1:] - starts[:-1])[:, None]], axis=1)
    offsets = pa.ListArray.from_arrays(
        pa.array(np.arange(n + 1) * (per_product + 1), pa.int32()),
        pa.array(relative.ravel(), pa.int32()),
    )
    image_starts = features.image_offsets * image_dim
    images = pa.ListArray.from_arrays(
        pa.array(image_starts, pa.int64()).cast(pa.int32()),
        pa.array(features.image_values.ravel(), pa.float32()),
    )
    return pa.Table.from_arrays(
        [features.product_ids.cast(pa.string()), tokens, offsets, images], schema=PRODUCT_SCHEMA
    )


def example_rows(
    batch: pa.Table | pa.RecordBatch, holdout_fraction: float, query_dim: int
) -> tuple[pa.Table, ValidationReport]:
    """EXAMPLE_SCHEMA rows of the valid rows of a raw engagement-log batch, and the batch's
    validation report (its rejected rows are counted, not returned)."""
    log = validate_engagements(batch, query_dim)
    valid = log.valid
    queries = pc.list_flatten(valid.column("query_embedding")).to_numpy().astype(np.float32)
    queries = queries.reshape(valid.num_rows, query_dim)
    queries /= np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    query_column = pa.ListArray.from_arrays(
        pa.array(np.arange(valid.num_rows + 1) * query_dim, pa.int32()),
        pa.array(queries.ravel(), pa.float32()),
    )
    rows = pa.Table.from_arrays(
        [
            valid.column(PRODUCT_ID),
            pa.array(task_ids(valid), pa.int16()),
            query_column,
            pa.array(holdout_mask(valid, holdout_fraction), pa.bool_()),
        ],
        schema=EXAMPLE_SCHEMA,
    )
    return rows, log.report


def task_names(counts: dict[int, int]) -> dict[str, int]:
    """Counts keyed by task index, keyed by task name (TASKS order)."""
    return {TASKS[t]: counts[t] for t in sorted(counts)}


def task_count_vector(counts: dict[str, int]) -> np.ndarray:
    """Counts keyed by task name (a manifest's) as one count per task, TASKS order."""
    return np.array([counts.get(task, 0) for task in TASKS], np.int64)


FORMAT = "itemsage-training-data/2"
MANIFEST, VOCAB, RUN_PREFIX = "manifest.json", "vocab.json", "run-"


def new_run() -> str:
    """The folder name of a new preparation under its data directory: run-<UTC time>-<random>."""
    return f"{RUN_PREFIX}{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:8]}"


def write_part(batches: Iterable[pa.RecordBatch], schema: pa.Schema, root: str, key: str) -> dict:
    """Write `batches` as one Parquet file of `schema` at `key` under `root` (a path or a URI):
    into a local temporary file first, so that its checksum needs no second read, then moved or
    uploaded. Returns its description for the manifest: path (`key`), rows, bytes, sha256."""
    with tempfile.TemporaryDirectory(prefix="itemsage-part-") as scratch:
        local, rows = Path(scratch) / "part.parquet", 0
        with pq.ParquetWriter(local, schema) as writer:
            for batch in batches:
                writer.write_table(pa.Table.from_batches([batch]).cast(schema))
                rows += batch.num_rows
        size, digest = local.stat().st_size, sha256_file(local)
        Store(root).upload(local, key)
    return {"path": key, "rows": rows, "bytes": size, "sha256": digest}


def preparation(config: PrepareConfig) -> dict:
    """What a manifest records of the options that made the data (all but `out`), as JSON."""
    options = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("mapping", "out")}
    return json.loads(json.dumps({"options": options, "mapping": repr(config.mapping)}))


def changed_preparation(manifest: dict, config: PrepareConfig) -> list[str]:
    """The options of `config` that differ from those that prepared `manifest`'s data."""
    now = preparation(config)
    then = {"options": manifest.get("options", {}), "mapping": manifest.get("mapping")}
    keys = {*now["options"], *then["options"]}
    changed = [k for k in sorted(keys) if now["options"].get(k) != then["options"].get(k)]
    return changed + (["mapping"] if now["mapping"] != then["mapping"] else [])


def write_prepared_manifest(
    directory: str,
    run: str,
    files: list[dict],
    config: PrepareConfig,
    vocab: Vocabulary,
    counts: dict,
    seconds: float,
) -> dict:
    """Write `directory`'s manifest.json, which makes the data of `run` (its folder there, written
    before) the complete data: the format, the options, the counts, and every data file
    (write_part's descriptions, paths relative to the run folder); returns it."""
    manifest = {
        "format": FORMAT,
        **preparation(config),
        "run": run,
        "vocab_tokens": vocab.size,
        "counts": counts,
        "files": sorted(files, key=lambda f: f["path"]),
        "seconds": seconds,
    }
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    Store(directory).write_bytes(MANIFEST, text.encode())
    return manifest


def remove_other_runs(directory: str, run: str) -> None:
    """Remove all that `directory` holds besides its manifest and the folder of `run`: earlier
    preparations, and those that failed or were killed."""
    store = Store(directory)
    for name in store.names(""):
        if name not in (MANIFEST, run):
            store.delete(name)


def read_prepared_manifest(directory: str | os.PathLike) -> dict:
    """The manifest of prepared training data (a path or a URI), or a one-line error naming the
    fix."""
    store = Store(directory)
    try:
        manifest = json.loads(store.read_bytes(MANIFEST))
    except (OSError, ValueError) as exc:
        raise ItemSageError(
            f"{os.fspath(directory)} holds no complete prepared training data "
            f"({exc.__class__.__name__}: {store.path(MANIFEST)}); run `itemsage prepare-training "
            f"--out {os.fspath(directory)}`"
        ) from None
    if manifest.get("format") != FORMAT:
        raise ItemSageError(
            f"{store.path(MANIFEST)}: format {manifest.get('format')!r}, expected {FORMAT!r} "
            "(prepare the data again)"
        )
    return manifest


def prepared_files(directory: str | os.PathLike, manifest: dict, part: str) -> list[str]:
    """The files of `part` (products, train, heldout, catalog_pairs) that `manifest` lists, in
    order, as paths or URIs: never a listing, so only the complete preparation's files."""
    store = Store(directory)
    return [
        store.path(f"{manifest['run']}/{f['path']}")
        for f in manifest["files"]
        if f["path"].startswith(f"{part}/")
    ]


def read_prepared_vocab(directory: str | os.PathLike, manifest: dict) -> Vocabulary:
    """The vocabulary the data in `directory` (a path or a URI) was prepared with."""
    store = Store(directory)
    key = f"{manifest['run']}/{VOCAB}"
    return Vocabulary.from_json(store.read_bytes(key), store.path(key))
