"""The recall promise as users get it (issue 35): on a 20k-product world, surfaces built with
their search settings left to "auto" serve at least their min_recall, measured here through
`itemsage query --ids-file` on 500 random products against NumPy's exact search; after an
incremental night that adds exact duplicates, `verify-index` passes at 20 and 1,000 samples."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from cli_runs import itemsage
from deltalake import write_deltalake
from index_helpers import clustered

from index_builder.build_config import BuildIndexConfig
from index_builder.surfaces import parse_surfaces
from jobs.build_indexes import build_indexes

pytestmark = pytest.mark.spark
N, DIM = 20_000, 256
TARGETS = {"closeup": 0.97, "search": 0.95, "home": 0.97, "feed": 0.95}
SURFACES = {
    "defaults": {"target_shard_size": 6000},
    "surfaces": {
        "closeup": {"sharding": "kmeans", "shards": 8, "min_recall": TARGETS["closeup"]},
        "search": {"index": "ivf-pq", "shards": 2, "min_recall": TARGETS["search"]},
        "home": {"index": "hnsw-sq8", "shards": 2, "min_recall": TARGETS["home"]},
        "feed": {"shards": 4, "min_recall": TARGETS["feed"]},
    },
}


def write(uri: str, names: list[str], vectors: np.ndarray) -> None:
    table = pa.table(
        {
            "product_id": names,
            "embedding": pa.array(list(vectors), pa.list_(pa.float32())),
            "model_version": ["m1"] * len(names),
            "content_hash": [f"h-{name}" for name in names],
        }
    )
    write_deltalake(uri, table, mode="overwrite")


def served_through_query(root, surface: str, names: list[str], vectors: np.ndarray, tmp_path):
    """Recall@10 of 500 random products through `itemsage query --ids-file` (each query
    leaves itself out), against exact top 10 by NumPy over every vector but the query's."""
    rows = np.random.default_rng(11).choice(len(names), 500, replace=False)
    (tmp_path / "ids.txt").write_text("\n".join(names[r] for r in rows))
    out = tmp_path / f"{surface}.jsonl"
    query = itemsage(
        "query", "--index", str(root), "--surface", surface,
        "--ids-file", str(tmp_path / "ids.txt"), "--out", str(out),
    )  # fmt: skip
    assert query.returncode == 0, query.stderr[-2000:]
    position = {name: i for i, name in enumerate(names)}
    recalls = []
    for row, line in zip(rows, out.read_text().splitlines()):
        answer = json.loads(line)
        assert answer["query"] == names[row]
        scores = vectors @ vectors[row]
        scores[row] = -np.inf
        tenth = np.sort(scores)[-10]
        got = [scores[position[n["product_id"]]] for n in answer["neighbours"]]
        recalls.append(np.sum(np.array(got) >= tenth - 1e-5) / 10)
    return float(np.mean(recalls))


def test_auto_settings_serve_min_recall_and_verify_survives_a_night_of_duplicates(spark, tmp_path):
    vectors = clustered(N, DIM, centres=1000, spread=1.0)
    names = [f"P{i:05d}" for i in range(N)]
    table, root = str(tmp_path / "embeddings"), tmp_path / "indexes"
    write(table, names, vectors)
    surfaces = list(parse_surfaces(SURFACES).values())
    built = build_indexes(spark, BuildIndexConfig(table, str(root), surfaces), progress=print)
    for name, target in TARGETS.items():
        result = built["surfaces"][name]
        assert result["status"] == "published", result.get("reason")
        served = result["served"]
        print(name, served["settings"], served["recall_at_10"], served["tuning"])
        assert served["recall_at_10"] >= target and served["queries"] == 1000
        measured = served_through_query(root, name, names, vectors, tmp_path)
        print(name, "through query:", measured)
        assert measured >= target, (name, measured)
    # which of the cheapest settings wins is a matter of measured queries/s, not asserted here
    assert 1 <= built["surfaces"]["closeup"]["served"]["settings"]["probe_clusters"] <= 8

    # a night adds 300 products whose vectors equal existing ones (the newest ids)
    copies = np.random.default_rng(3).choice(N, 300, replace=False)
    night_names = names + [f"Q{i:05d}" for i in range(300)]
    write(table, night_names, np.concatenate([vectors, vectors[copies]]))
    night = build_indexes(
        spark, BuildIndexConfig(table, str(root), surfaces, incremental=True), progress=print
    )
    assert night["surfaces"]["feed"]["mode"] == "incremental"
    for name in TARGETS:
        assert night["surfaces"][name]["status"] == "published"
        for samples in ("20", "1000"):
            verify = itemsage("verify-index", "--index", str(root), "--surface", name,
                              "--samples", samples)  # fmt: skip
            assert verify.returncode == 0, (name, samples, verify.stderr[-2000:])
            checked = json.loads(verify.stdout)
            assert checked["found_themselves"] >= 0.95 * checked["checked"]
            assert checked["served"]["recall_at_10"] >= TARGETS[name]
