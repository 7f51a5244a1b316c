"""The local cache of things fetched from object stores (text models, checkpoints)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def cache_root(kind: str) -> Path:
    """Where fetched `kind` ("models", "checkpoints") are cached: $ITEMSAGE_CACHE_DIR/KIND, else
    $XDG_CACHE_HOME/itemsage/KIND (~/.cache/itemsage/KIND), else (no writable home, as on some
    executors) the system's temporary directory."""
    if os.environ.get("ITEMSAGE_CACHE_DIR"):
        return Path(os.environ["ITEMSAGE_CACHE_DIR"]) / kind
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    try:
        (base / "itemsage").mkdir(parents=True, exist_ok=True)
    except OSError:
        base = Path(tempfile.gettempdir())
    return base / "itemsage" / kind
