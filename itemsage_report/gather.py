"""The report's figures, gathered into one JSON-ready dict (written as report.json beside the
page): per published surface its manifest's figures and a measured sweep, the model's training
history and held-out recall from its checkpoint, the embedding runs from the table's history."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from index_builder import search_sweep, served_recall
from index_builder.index_reader import load_published
from index_builder.index_types.registry import type_of
from index_builder.layout import current_build_id
from itemsage_core.embedding.table_history import embed_runs
from itemsage_core.errors import ItemSageError
from itemsage_core.model.checkpoint import read_checkpoint_manifest
from itemsage_core.storage.store import as_store
from itemsage_report import QUERIES

SHARD_FIGURES = ("shard", "count", "vectors", "index", "index_bytes", "recall_at_10", "search")


def published_surfaces(index_root: str) -> list[str]:
    """The surfaces under an index root that have a published build."""
    store = as_store(index_root)
    return [
        name
        for name in store.names("")
        if not name.startswith((".", "_")) and current_build_id(store, name)
    ]


def surface_figures(index, queries: int, seed: int) -> dict:
    """A loaded build's manifest figures, its recall/queries-per-second sweep and the scores of
    its sampled products' neighbours at the published settings."""
    manifest = index.manifest
    out = {
        "build_id": manifest["build_id"],
        "created_at": manifest["created_at"],
        "model_version": manifest["model_version"],
        "table": manifest["table"],
        "products": manifest["products"],
        "sharding": manifest["params"]["sharding"],
        "index": sorted({type_of(entry).name for entry in manifest["shards"]}),
        "gate": {
            "served": manifest.get("served", {}).get("recall_at_10"),  # None: an older build
            "stderr": manifest.get("served", {}).get("stderr"),
            "shard_min": manifest["recall_at_10"]["min"],
            "min_recall": manifest["params"]["min_recall"],
        },
        "memory": manifest.get("memory"),
        "shards": [{k: entry.get(k) for k in SHARD_FIGURES} for entry in manifest["shards"]],
    }
    if manifest["products"] < 2:
        return {**out, "sweep": None, "scores": None}
    drawn = served_recall.draw(index, queries, seed)
    points, published, scores = search_sweep.sweep(index, drawn)
    out["sweep"] = {
        "key": search_sweep.swept_key(manifest),
        "queries": len(drawn.queries),
        "threads": 1,
        "points": [vars(p) for p in points],
        "published": {**vars(published), "settings": search_sweep.published_settings(manifest)},
    }
    out["scores"] = {
        "top1": np.round(scores[:, 0], 5).tolist(),
        "top10": np.round(scores[:, -1], 5).tolist() if scores.shape[1] >= 10 else [],
    }
    return out


def model_figures(model_dir: str) -> dict:
    """The checkpoint's version, training history and held-out evaluation."""
    manifest = read_checkpoint_manifest(model_dir)
    summary = manifest.get("summary") or {}
    return {
        "path": str(model_dir),
        "model_version": manifest["model_version"],
        "history": (summary.get("training") or {}).get("history", []),
        "heldout": summary.get("heldout"),
    }


def gather(
    index_root: str,
    table_uri: str | None = None,
    model_dir: str | None = None,
    surfaces: list[str] | None = None,
    queries: int = QUERIES,
    seed: int = 0,
    cache_dir: str | None = None,
    progress: Callable[[str], None] = print,
) -> dict:
    """Every figure of the report. `table_uri` defaults to the table the published builds were
    built from; without `model_dir` the model section is left out."""
    names = surfaces or published_surfaces(index_root)
    if not names:
        raise ItemSageError(f"no published surface under {index_root}: run itemsage build-index")
    report: dict = {"index_root": str(index_root), "surfaces": {}}
    for name in names:
        progress(f"surface {name}: measuring recall and queries/s on {queries} of its products")
        index = load_published(index_root, name, warn=progress, cache_dir=cache_dir)
        report["surfaces"][name] = surface_figures(index, queries, seed)
    if table_uri is None:
        tables = {s["table"]["uri"] for s in report["surfaces"].values()}
        if len(tables) != 1:
            raise ItemSageError(f"the surfaces were built from {sorted(tables)}: give --table")
        table_uri = tables.pop()
    progress(f"embedding runs from the history of {table_uri}")
    report["table"] = {"uri": table_uri, "runs": embed_runs(table_uri)}
    report["model"] = model_figures(model_dir) if model_dir else None
    return report
