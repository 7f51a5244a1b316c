"""Sentence embeddings of products from a local sentence-transformers model folder, without Spark.

`itemsage featurize` (jobs/featurize_job.py, docs/featurize.md) runs this on its executors, and any
other code that must embed the same text with the same model (a baseline in `evaluate-catalog`)
calls the same functions:

- `check_model_dir`: a folder with `modules.json` and safetensors weights, and no pickle-like file
  (the checkpoint loader's rule, model/checkpoint.py); `model_files` / `model_identity`: the SHA-256
  of each file and one SHA-256 over them all (weights, configs, tokenizer), the model's identity;
- `fetch_model`: a model named by a URI (`s3://`, `gs://`, ...) copied once per machine into a
  local cache keyed by that identity (storage/store.py);
- `product_text`: the text embedded per product: its mapped text features as
  `lexical_neighbours.feature_text` builds them (lower-cased, every run of non-letters and
  non-digits one space, features joined by spaces), the TF-IDF baseline's text;
- `text_hashes`: a hash of that text, the key an incremental run reuses vectors by;
- `SentenceEncoder`: the model loaded once per process and device; `encode` gives float32 (n, dim)
  unit vectors, `batch_size` texts per forward pass. `encode_products` does text and encoding.

sentence-transformers is an optional extra (`pip install 'itemsage-spark[text]'`); nothing here
downloads: the model is a local folder (or fetched from the URI it was named by).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from itemsage_core.contracts.catalog_contract import TEXT_FEATURES
from itemsage_core.errors import ItemSageError, no_column
from itemsage_core.features.lexical_neighbours import feature_text
from itemsage_core.storage.cache import cache_root
from itemsage_core.storage.files import REFUSED_SUFFIXES, sha256_file
from itemsage_core.storage.uris import is_local_path

INSTALL_FIX = "pip install 'itemsage-spark[text]'"
MODULES = "modules.json"
# REFUSED_SUFFIXES: Hugging Face folders often carry pytorch_model.bin beside model.safetensors:
# delete it, sentence-transformers then loads the safetensors.
# Files of a model folder that are not part of its identity (documentation, VCS, caches).
_NOT_MODEL = {".md", ".lock"}
# How product_text builds the text; recorded in the output, part of the reuse rule.
TEXT_FORMAT = "feature_text/v1"
HASH_HEX = 32  # hex digits of a text hash: 128 bits
DEFAULT_BATCH_SIZE = 128
_LOADED: dict[tuple[str, str, str], SentenceEncoder] = {}


def _sentence_transformers():
    try:
        import sentence_transformers
    except ImportError:
        raise ItemSageError(
            f"sentence-transformers is not installed: {INSTALL_FIX} (an optional extra)"
        ) from None
    return sentence_transformers


def _listed(path: Path) -> list[Path]:
    """The regular files under `path`, sorted, hidden ones (names starting with '.') left out."""
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )


def check_model_dir(path: str | os.PathLike) -> Path:
    """`path` as a usable sentence-transformers folder, else ItemSageError naming the fix."""
    path = Path(path)
    if not path.is_dir():
        raise ItemSageError(
            f"text model {path} is not a directory: give a sentence-transformers model folder "
            "(one with modules.json), or its s3:// / gs:// URI"
        )
    if not (path / MODULES).is_file():
        raise ItemSageError(
            f"text model {path} has no {MODULES}: it is not a sentence-transformers model folder "
            "(save one with SentenceTransformer.save(), or unpack the whole model there)"
        )
    files = _listed(path)
    refused = [str(p.relative_to(path)) for p in files if p.suffix.lower() in REFUSED_SUFFIXES]
    if refused:
        raise ItemSageError(
            f"text model {path} holds {', '.join(refused)}: pickle-like files are refused "
            "(they can run code when loaded); delete them and keep the .safetensors weights"
        )
    if not any(p.suffix == ".safetensors" for p in files):
        raise ItemSageError(
            f"text model {path} has no .safetensors weights (model.safetensors): only "
            "safetensors weights are loaded"
        )
    return path


def model_files(path: str | os.PathLike) -> dict[str, str]:
    """SHA-256 of every file of a checked model folder that makes its vectors (weights, configs,
    tokenizer; not documentation or hidden files), by '/'-separated relative path."""
    path = check_model_dir(path)
    return {
        p.relative_to(path).as_posix(): sha256_file(p)
        for p in _listed(path)
        if p.suffix.lower() not in _NOT_MODEL
    }


def model_identity(files: dict[str, str]) -> str:
    """One SHA-256 over model_files' checksums: equal folders have equal identities."""
    joined = "".join(f"{name}:{files[name]}\n" for name in sorted(files))
    return hashlib.sha256(joined.encode()).hexdigest()


def _download(uri: str, into: Path) -> None:
    """Every file under the model URI into the local directory `into`."""
    from itemsage_core.storage.store import Store

    store, found = Store(uri), False

    def copy(key: str, target: Path) -> None:
        nonlocal found
        for name, size in store.sizes(key).items():
            child = f"{key}/{name}" if key else name
            if size < 0:
                copy(child, target / name)
            else:
                store.download(child, target / name)
                found = True

    copy("", into)
    if not found:
        raise ItemSageError(f"text model {uri}: no files there (check the URI)")


def fetch_model(source: str, identity: str | None = None, cache_dir: Path | None = None) -> Path:
    """A local folder of the model named `source`: the folder itself when local, else a copy in
    the cache, downloaded once per machine (concurrent fetches race to rename; one wins). With
    `identity`, a cached copy of that identity is used as it is and a new download must have it
    (else ItemSageError: the model at the URI changed during the run)."""
    if is_local_path(source):
        return check_model_dir(source)
    cache = Path(cache_dir or cache_root("models"))
    if identity and (cache / identity / MODULES).is_file():
        return cache / identity
    cache.mkdir(parents=True, exist_ok=True)
    staging = cache / f".fetch-{uuid.uuid4().hex}"
    try:
        _download(source, staging)
        found = model_identity(model_files(staging))
        if identity and found != identity:
            raise ItemSageError(
                f"text model {source} changed during the run (sha256 {found[:12]}, expected "
                f"{identity[:12]}): rerun when it is no longer being written"
            )
        target = cache / found
        if not (target / MODULES).is_file():
            with contextlib.suppress(OSError):  # another process placed it first
                os.replace(staging, target)
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_features(features: Sequence[str]) -> list[str]:
    """Feature names checked against the contract's text features, in the contract's order and
    without repeats (so the text does not depend on how the flag was written)."""
    unknown = [f for f in features if f not in TEXT_FEATURES]
    if unknown:
        raise ItemSageError(
            f"--features: {no_column(unknown[0], list(TEXT_FEATURES))}: the text features are "
            f"{', '.join(TEXT_FEATURES)} (after the column mapping)"
        )
    if not features:
        raise ItemSageError("--features: name at least one text feature, e.g. title,brand")
    return [f for f in TEXT_FEATURES if f in set(features)]


def default_features(columns: Sequence[str]) -> list[str]:
    """Every contract text feature among the mapped catalog's `columns` (title first): what
    evaluate-catalog compares by default. Pass --features to leave one out (a label column)."""
    return [f for f in TEXT_FEATURES if f in set(columns)]


def product_text(table: pa.Table | pa.RecordBatch, features: Sequence[str]) -> list[str]:
    """The text embedded per product of a mapped, conformed catalog batch: its `features` as
    lexical_neighbours.feature_text builds them (normalised, joined by spaces)."""
    return feature_text(table, list(features))


def text_hashes(texts: Sequence[str]) -> pa.Array:
    """Per text, the first HASH_HEX hex digits of the SHA-256 of its UTF-8 bytes."""
    return pa.array(
        [hashlib.sha256(t.encode("utf-8")).hexdigest()[:HASH_HEX] for t in texts], pa.string()
    )


def _quiet_transformers() -> None:
    """No progress bars or load reports from transformers (one line per worker otherwise)."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


class SentenceEncoder:
    """A sentence-transformers model on one device; `encode` gives unit float32 vectors."""

    def __init__(self, model, identity: str):
        self.model, self.identity = model, identity
        dim = (
            getattr(model, "get_embedding_dimension", None)
            or model.get_sentence_embedding_dimension
        )
        self.dim = int(dim())

    @classmethod
    def load(cls, path: str | os.PathLike, identity: str | None = None, device: str = "cpu"):
        """The model of a checked folder, loaded once per process, identity and device (Spark
        reuses its Python workers, so one load serves many tasks). `identity` (model_identity)
        keys the copy; None computes it."""
        path = check_model_dir(path)
        identity = identity or model_identity(model_files(path))
        key = (str(path), identity, str(device))
        if key not in _LOADED:
            st = _sentence_transformers()
            _quiet_transformers()
            model = st.SentenceTransformer(
                str(path), device=device, local_files_only=True, trust_remote_code=False
            )
            _LOADED[key] = cls(model.eval(), identity)
        return _LOADED[key]

    def encode(self, texts: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """(len(texts), dim) float32 unit vectors, `batch_size` texts per forward pass."""
        if not len(texts):
            return np.zeros((0, self.dim), np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        ).astype(np.float32, copy=False)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)  # unit even without a Normalize module

    def encode_products(
        self,
        table: pa.Table | pa.RecordBatch,
        features: Sequence[str],
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> np.ndarray:
        """encode(product_text(table, features)): the vectors `itemsage featurize` writes."""
        return self.encode(product_text(table, features), batch_size)
