"""What every written run report must hold (tests/test_demo.py): each plot the page shows is a
PNG that decodes at the report's size and is not blank, and its figures are the manifests',
the table history's and the checkpoint's."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from PIL import Image

from index_builder.index_types.shard import EF_STEPS
from index_builder.layout import build_key, current_build_id, read_build_manifest
from index_builder.search_sweep import published_settings
from itemsage_core.embedding.embeddings_table import read_table
from itemsage_core.model.checkpoint import read_checkpoint_manifest
from itemsage_core.storage.store import Store
from itemsage_report.figures import SIZE


def check_report(folder: Path, index_root: Path, model: bool) -> dict:
    page = (folder / "index.html").read_text()
    report = json.loads((folder / "report.json").read_text())
    shown = re.findall(r'<img src="([^"]+)"', page)
    assert sorted(shown) == sorted(report["images"].values())
    kinds = ("recall", "scores", "shards")
    expected = {f"{s}-{kind}" for s in report["surfaces"] for kind in kinds}
    expected |= {"runs"} | ({"training", "heldout"} if model else set())
    assert set(report["images"]) == expected
    for name in shown:
        assert (folder / name).stat().st_size > 5_000, name
        with Image.open(folder / name) as image:
            assert image.format == "PNG" and image.size == SIZE, (name, image.size)
            pixels = np.asarray(image.convert("L"))
        assert pixels.std() > 5, f"{name} is blank"

    store = Store(index_root)
    for surface, figures in report["surfaces"].items():
        manifest = read_build_manifest(store, build_key(surface, current_build_id(store, surface)))
        assert figures["build_id"] == manifest["build_id"] and manifest["build_id"] in page
        assert figures["products"] == manifest["products"]
        assert figures["gate"]["served"] == manifest["served"]["recall_at_10"]
        assert figures["gate"]["shard_min"] == manifest["recall_at_10"]["min"]
        assert [(s["shard"], s["count"], s["vectors"], s["index_bytes"], s["recall_at_10"])
                for s in figures["shards"]] == [
            (s["shard"], s["count"], s["vectors"], s["index_bytes"], s["recall_at_10"])
            for s in manifest["shards"]
        ]  # fmt: skip
        assert sum(s["count"] for s in figures["shards"]) == manifest["products"]
        sweep = figures["sweep"]
        assert sweep["key"] == "ef_search" and [p["setting"] for p in sweep["points"]] == list(
            EF_STEPS
        )
        assert sweep["published"]["settings"] == published_settings(manifest)
        for point in [*sweep["points"], sweep["published"]]:
            assert 0 <= point["recall"] <= 1 and point["qps"] > 0
        assert len(figures["scores"]["top1"]) == sweep["queries"] == min(500, manifest["products"])
        assert all(a >= b for a, b in zip(figures["scores"]["top1"], figures["scores"]["top10"]))

    table = report["table"]
    latest = table["runs"][-1]
    assert latest["products"] == read_table(table["uri"], columns=["product_id"]).num_rows
    assert all(run["rows_in"] == run["products"] + run["quarantined"] for run in table["runs"])
    if model:
        checkpoint = read_checkpoint_manifest(Path(report["model"]["path"]))
        assert report["model"]["model_version"] == checkpoint["model_version"]
        assert report["model"]["heldout"] == checkpoint["summary"]["heldout"]
        assert report["model"]["history"] == checkpoint["summary"]["training"]["history"]
    else:
        assert report["model"] is None
    return report
