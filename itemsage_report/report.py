"""Writing the report: gather the figures, draw the plots into a local staging folder, then move
them to the output (a folder, or an object store prefix), report.json next and index.html last,
so a reader of the page finds every file it names."""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from itemsage_core.storage.store import as_store
from itemsage_report import QUERIES, figures
from itemsage_report.gather import gather
from itemsage_report.page import render

PAGE, FIGURES = "index.html", "report.json"


def draw(report: dict, folder: Path) -> dict[str, str]:
    """Every plot the gathered report has data for, as PNG files in `folder`: name -> file."""
    plots = {}
    for name, s in report["surfaces"].items():
        if s["sweep"]:
            plots[f"{name}-recall"] = (figures.recall_vs_qps, name, s)
            plots[f"{name}-scores"] = (figures.score_distribution, name, s)
        plots[f"{name}-shards"] = (figures.shard_sizes, name, s)
    if report["table"]["runs"]:
        plots["runs"] = (figures.embedding_runs, report["table"])
    model = report["model"]
    if model and model["history"]:
        plots["training"] = (figures.training_loss, model)
    if model and model["heldout"]:
        plots["heldout"] = (figures.heldout_recall, model)
    images = {}
    for key, (plot, *args) in plots.items():
        images[key] = plot(*args, folder / f"{key}.png").name
    return images


def write_report(
    index_root: str,
    out: str,
    table_uri: str | None = None,
    model_dir: str | None = None,
    surfaces: list[str] | None = None,
    queries: int = QUERIES,
    progress: Callable[[str], None] = print,
    cache_dir: str | None = None,
) -> dict:
    """Gather, draw and write the report into `out`; returns the figures with the page's
    location (`page`) and the plots' file names (`images`)."""
    with tempfile.TemporaryDirectory(prefix="itemsage-report-") as tmp:
        staging = Path(tmp)
        report = gather(index_root, table_uri, model_dir, surfaces, queries, progress=progress,
                        cache_dir=cache_dir)  # fmt: skip
        progress(f"drawing the plots into {out}")
        images = draw(report, staging)
        created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        report = {**report, "created_at": created, "images": images}
        (staging / FIGURES).write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
        (staging / PAGE).write_text(render(report, images, created))
        store = as_store(out)
        for name in [*images.values(), FIGURES, PAGE]:
            store.write_bytes(name, (staging / name).read_bytes())
    return {**report, "page": store.path(PAGE)}
