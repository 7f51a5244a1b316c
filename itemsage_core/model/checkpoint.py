"""Model checkpoints: a directory of JSON and safetensors files only, never pickle.

    MODEL_DIR/config.json         model, vocabulary and training settings
    MODEL_DIR/vocabulary.json     the token vocabularies (itemsage_core/features/vocabulary.py)
    MODEL_DIR/model.safetensors   the weights
    MODEL_DIR/checkpoint.json     model_version, sha256 of each file above, training summary

`model_version` is derived from the three files' bytes, so equal weights, vocabulary and
settings give an equal version. A checkpoint is written into a temporary sibling directory and
renamed into place. Loading verifies every checksum and refuses a directory holding a file that
could execute code when loaded (pickle and its kin). `out` and every reader's path may also be an
object-store URI (model/model_store.py: uploaded with the manifest last, fetched into a local
cache).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from safetensors.torch import load_file, save_file

from itemsage_core.errors import ItemSageError
from itemsage_core.features.vocabulary import Vocabulary
from itemsage_core.model.config import ModelConfig
from itemsage_core.model.encoder import ItemSageEncoder
from itemsage_core.model.model_store import fetch_checkpoint, publish_checkpoint
from itemsage_core.storage.files import REFUSED_SUFFIXES, sha256_file
from itemsage_core.storage.uris import is_local_path

CONFIG, VOCABULARY, WEIGHTS, MANIFEST = (
    "config.json",
    "vocabulary.json",
    "model.safetensors",
    "checkpoint.json",
)
FILES = (CONFIG, VOCABULARY, WEIGHTS)


@dataclasses.dataclass
class Checkpoint:
    model: ItemSageEncoder
    vocab: Vocabulary
    config: dict
    model_version: str
    path: Path


def model_version_of(checksums: dict[str, str]) -> str:
    joined = "".join(f"{name}:{checksums[name]}\n" for name in FILES)
    return "itemsage-" + hashlib.sha256(joined.encode()).hexdigest()[:16]


def _write_files(
    staging: Path, model: ItemSageEncoder, vocab: Vocabulary, settings: dict, summary: dict
) -> str:
    """The checkpoint's files and manifest, written into `staging`; returns its version."""
    config = {"model": model.config.to_dict(), **settings}
    (staging / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    vocab.save(staging / VOCABULARY)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(staging / WEIGHTS))
    checksums = {name: sha256_file(staging / name) for name in FILES}
    version = model_version_of(checksums)
    manifest = {"model_version": version, "sha256": checksums, "summary": summary}
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    for written in staging.iterdir():
        written.chmod(0o644)
    staging.chmod(0o755)  # mkdtemp's 0700 would hide the model from other users
    return version


def save_checkpoint(
    out: str | Path, model: ItemSageEncoder, vocab: Vocabulary, settings: dict, summary: dict
) -> str:
    """Write a checkpoint to `out`, a directory or an object-store URI (replacing an earlier
    checkpoint there; the earlier one stays whole until the new one is); returns its version."""
    if not is_local_path(str(out)):
        staging = Path(tempfile.mkdtemp(prefix="itemsage-checkpoint-"))
        try:
            version = _write_files(staging, model, vocab, settings, summary)
            publish_checkpoint(staging, str(out), FILES, MANIFEST)
            return version
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).exists():
        raise ItemSageError(f"{out} exists and is not a model checkpoint; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        version = _write_files(staging, model, vocab, settings, summary)
        if out.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, retired / out.name)
            os.replace(staging, out)
            shutil.rmtree(retired)
        else:
            os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return version


def local_checkpoint(source: str | Path) -> Path:
    """The model directory `source`, or for an object-store URI its verified copy in the local
    cache (model/model_store.py)."""
    if is_local_path(str(source)):
        return Path(source)
    return fetch_checkpoint(str(source), FILES, MANIFEST, _verified)


def read_checkpoint_manifest(source: str | Path) -> dict:
    """The checkpoint.json of a model directory or URI, after the safety and checksum checks."""
    return _verified(local_checkpoint(source))


def _verified(path: Path) -> dict:
    """The checkpoint.json of a local model directory, after the safety and checksum checks."""
    if not (path / MANIFEST).is_file():
        raise ItemSageError(f"{path} is not a model checkpoint (no {MANIFEST})")
    refused = sorted(p.name for p in path.iterdir() if p.suffix.lower() in REFUSED_SUFFIXES)
    if refused:
        raise ItemSageError(
            f"{path} holds {', '.join(refused)}: pickle-like files are refused, "
            "a checkpoint is JSON and safetensors only"
        )
    manifest = json.loads((path / MANIFEST).read_text())
    for name in FILES:
        if not (path / name).is_file():
            raise ItemSageError(f"checkpoint {path} is missing {name}")
        if sha256_file(path / name) != manifest["sha256"].get(name):
            raise ItemSageError(
                f"checkpoint {path}: {name} does not match its sha256 in "
                f"{MANIFEST} (corrupted or edited)"
            )
    if model_version_of(manifest["sha256"]) != manifest["model_version"]:
        raise ItemSageError(f"checkpoint {path}: model_version does not match its files")
    return manifest


def load_checkpoint(source: str | Path, device: str = "cpu") -> Checkpoint:
    """Load and verify a checkpoint (a directory or a URI); the model comes back in eval mode.
    Its `path` is the local directory it was loaded from."""
    path = local_checkpoint(source)
    manifest = _verified(path)
    config = json.loads((path / CONFIG).read_text())
    model = ItemSageEncoder(ModelConfig.from_dict(config["model"]))
    model.load_state_dict(load_file(str(path / WEIGHTS), device="cpu"))
    return Checkpoint(
        model=model.to(device).eval(),
        vocab=Vocabulary.load(path / VOCABULARY),
        config=config,
        model_version=manifest["model_version"],
        path=path,
    )
