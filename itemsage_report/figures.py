"""The report's plots, drawn with matplotlib's object API (no pyplot state, no display) into
PNG files of SIZE pixels: one function per plot, each taking its part of the gathered report."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from matplotlib.figure import Figure

SIZE = (800, 450)  # width, height in pixels of every plot
DPI = 100


def _figure(rows: int = 1) -> tuple[Figure, list]:
    figure = Figure(figsize=(SIZE[0] / DPI, SIZE[1] / DPI), dpi=DPI, layout="constrained")
    axes = figure.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    return figure, list(axes)


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, format="png", dpi=DPI)
    return path


def recall_vs_qps(surface: str, figures: dict, path: Path) -> Path:
    """Recall@10 against queries/s for each swept setting, the published settings marked."""
    sweep = figures["sweep"]
    figure, (axes,) = _figure()
    points = sweep["points"]
    axes.plot([p["recall"] for p in points], [p["qps"] for p in points], "o-", label="swept")
    for p in points:
        axes.annotate(str(p["setting"]), (p["recall"], p["qps"]), fontsize=8,
                      textcoords="offset points", xytext=(4, 4))  # fmt: skip
    published = sweep["published"]
    settings = sorted(set(published["settings"]))
    shown = str(settings[0]) if len(settings) == 1 else f"{settings[0]}-{settings[-1]} per shard"
    axes.plot(published["recall"], published["qps"], "r*", markersize=16,
              label=f"published ({sweep['key']} {shown})")  # fmt: skip
    axes.axvline(figures["gate"]["min_recall"], color="grey", linestyle=":",
                 label=f"gate min_recall {figures['gate']['min_recall']}")  # fmt: skip
    axes.set_yscale("log")
    axes.set_xlabel(f"recall@10 against exact search ({sweep['queries']} sampled products)")
    axes.set_ylabel(f"queries/s ({sweep['threads']} thread)")
    axes.set_title(f"{surface}: recall@10 vs queries/s as {sweep['key']} varies")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="best", fontsize=8)
    return _save(figure, path)


def shard_sizes(surface: str, figures: dict, path: Path) -> Path:
    """Products and distinct vectors per shard."""
    shards = figures["shards"]
    figure, (axes,) = _figure()
    positions = list(range(len(shards)))
    axes.bar([x - 0.2 for x in positions], [s["count"] for s in shards], 0.4, label="products")
    axes.bar([x + 0.2 for x in positions], [s["vectors"] for s in shards], 0.4,
             label="distinct vectors (indexed)")  # fmt: skip
    axes.set_xticks(positions, [str(s["shard"]) for s in shards])
    axes.set_xlabel("shard")
    axes.set_ylabel("count")
    axes.set_title(f"{surface}: {figures['products']:,} products in {len(shards)} shards")
    axes.legend(fontsize=8)
    return _save(figure, path)


def score_distribution(surface: str, figures: dict, path: Path) -> Path:
    """Histograms of the cosine of each sampled product's first and tenth neighbour."""
    scores = figures["scores"]
    figure, (axes,) = _figure()
    axes.hist(scores["top1"], bins=40, alpha=0.6, label="1st neighbour")
    if scores["top10"]:
        axes.hist(scores["top10"], bins=40, alpha=0.6, label="10th neighbour")
    axes.set_xlabel("cosine")
    axes.set_ylabel("sampled products")
    axes.set_title(f"{surface}: neighbour scores at the published settings")
    axes.legend(fontsize=8)
    return _save(figure, path)


def training_loss(model: dict, path: Path) -> Path:
    """The training loss (and each objective's) against the step."""
    history = model["history"]
    figure, (axes,) = _figure()
    steps = [entry["step"] for entry in history]
    parts = [k for k in history[0] if k not in ("step", "epoch", "temperature", "examples_per_s")]
    for key in parts:
        axes.plot(steps, [entry[key] for entry in history], "o-" if len(steps) < 30 else "-",
                  label=key)  # fmt: skip
    axes.set_xlabel("step")
    axes.set_ylabel("loss (mean over the steps since the last point)")
    axes.set_title(f"training of {model['model_version']}")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, path)


def heldout_recall(model: dict, path: Path) -> Path:
    """Held-out Recall@k overall and per task."""
    heldout = model["heldout"]
    names = ["overall", *heldout["per_task"]]
    values = [heldout["overall"], *heldout["per_task"].values()]
    figure, (axes,) = _figure()
    bars = axes.bar(names, values, color=["tab:grey"] + ["tab:blue"] * (len(names) - 1))
    axes.bar_label(bars, fmt="%.3f", fontsize=8)
    axes.set_ylim(0, 1.05)
    axes.set_ylabel(heldout["metric"])
    axes.set_title(
        f"held-out {heldout['metric']}: {heldout['examples']:,} examples, "
        f"index of {heldout['index_size']:,} products"
    )
    return _save(figure, path)


def embedding_runs(table: dict, path: Path) -> Path:
    """Products in the table, rows quarantined and embedding rate of each embedding run."""
    runs = table["runs"]
    when = [dt.datetime.fromisoformat(run["at"]) for run in runs]
    figure, axes = _figure(rows=3)
    panels = [
        ("products", "products after the run"),
        ("quarantined", "rows quarantined"),
        ("embedded_per_s", "embedded/s (embed stage)"),
    ]
    for ax, (key, label) in zip(axes, panels):
        ax.plot(when, [run[key] or 0 for run in runs], "o-")
        ax.set_ylabel(label, fontsize=8)
        ax.grid(True, alpha=0.3)
    axes[0].set_title(f"embedding runs of {table['uri']} (table versions "
                      f"{runs[0]['version']}-{runs[-1]['version']})")  # fmt: skip
    axes[-1].set_xlabel("commit time (UTC)")
    figure.autofmt_xdate()
    return _save(figure, path)
