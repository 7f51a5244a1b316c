"""Search settings tuned to served recall (index_builder/served_tuning.py) and the gate on it
(served_gate, build_release): what publishes serves min_recall, measured here independently."""

from __future__ import annotations

import numpy as np
import pytest
from index_helpers import build_and_release, build_kmeans_and_release, clustered, ids

from index_builder.index_reader import load_published
from index_builder.served_recall import draw, served
from index_builder.served_tuning import MARGIN, apply, knobs
from index_builder.surfaces import Surface

N = 4000
DIM = 64


def independent_recall(index, vectors: np.ndarray, names: list[str], seed: int = 7) -> float:
    """Recall@10 of 400 random products (not the gate's sample) queried in one batch through
    the reader, against a brute-force top 10 over every vector but the query's own."""
    rows = np.random.default_rng(seed).choice(len(vectors), 400, replace=False)
    answer = index.search_batch(vectors[rows], 10, [names[r] for r in rows])
    position = {name: i for i, name in enumerate(names)}
    recalls = []
    for row, found in zip(rows, answer.ids):
        scores = vectors @ vectors[row]
        scores[row] = -np.inf
        tenth = np.sort(scores)[-10]
        got = [scores[position[pid]] for pid in found if pid is not None]
        recalls.append(np.sum(np.array(got) >= tenth - 1e-6) / 10)
    return float(np.mean(recalls))


@pytest.fixture(scope="module")
def world():
    vectors = clustered(N, DIM, centres=100, spread=0.8)
    return vectors, ids(N)


def test_kmeans_probes_and_ef_search_tuned_to_served_recall_sit_on_the_staircase(tmp_path, world):
    vectors, names = world
    surface = Surface("closeup", sharding="kmeans", shards=8, min_recall=0.97, served_queries=500)
    result = build_kmeans_and_release(tmp_path, surface, vectors, names)
    assert result["status"] == "published", result.get("reason")
    served_figures = result["served"]
    settings = served_figures["settings"]
    assert set(settings) == {"probe_clusters", "ef_search"}
    assert 1 <= settings["probe_clusters"] <= 8  # which, of the cheapest, is measured (q/s)
    assert served_figures["recall_at_10"] - MARGIN * served_figures["stderr"] >= 0.97
    index = load_published(tmp_path, "closeup")
    assert index.manifest["params"]["probe_clusters"] == settings["probe_clusters"]
    assert index.manifest["config"]["probe_clusters"] == "auto"
    assert all(e["search"]["ef_search"] == settings["ef_search"] for e in index.manifest["shards"])
    assert independent_recall(index, vectors, names.to_pylist()) >= 0.97
    # on the staircase: one probe fewer, or the ef_search step below, misses the target
    drawn = draw(index, 500, surface.seed)
    steps = {k.name: k.values for k in knobs(index, surface.params())}
    ef_steps = steps["ef_search"]
    cheaper = []
    if settings["probe_clusters"] > 1:
        cheaper.append({**settings, "probe_clusters": settings["probe_clusters"] - 1})
    if settings["ef_search"] > ef_steps[0]:
        below = ef_steps[ef_steps.index(settings["ef_search"]) - 1]
        cheaper.append({**settings, "ef_search": below})
    for setting in cheaper:
        apply(index, setting)
        assert not served(index, drawn)[0].meets(0.97, MARGIN), setting


@pytest.mark.parametrize(("kind", "target"), [("ivf-pq", 0.95), ("hnsw-sq8", 0.97)])
def test_quantised_types_publish_with_auto_settings_and_serve_min_recall(
    tmp_path, world, kind, target
):
    vectors, names = world
    surface = Surface(
        "search", index=kind, shards=2, pq_bytes=16, min_recall=target, served_queries=500
    )
    result = build_and_release(tmp_path, surface, vectors, names)
    assert result["status"] == "published", result.get("reason")
    settings = result["served"]["settings"]
    assert "rerank" in settings and settings["rerank"] >= 1
    index = load_published(tmp_path, "search")
    assert all(e["search"]["rerank"] == settings["rerank"] for e in index.manifest["shards"])
    assert all(shard.rerank == settings["rerank"] for shard in index.indexes)
    assert independent_recall(index, vectors, names.to_pylist()) >= target


def test_fixed_settings_are_served_as_given(tmp_path, world):
    vectors, names = world
    surface = Surface(
        "closeup", sharding="kmeans", shards=4, probe_clusters=3, ef_search=96, min_recall=0.5
    )
    result = build_kmeans_and_release(tmp_path, surface, vectors, names)
    assert result["served"]["settings"] == {"probe_clusters": 3, "ef_search": 96}
    assert result["served"]["tuning"]["trials"] == 1 and result["served"]["tuning"]["auto"] == []


def test_an_unreachable_target_publishes_nothing_and_names_the_weakest_part(tmp_path, world):
    vectors, names = world
    good = build_and_release(tmp_path, Surface("home", min_recall=0.9), vectors, names)
    poor = Surface("home", M=2, ef_construction=10, min_recall=0.999, served_queries=300)
    result = build_and_release(tmp_path, poor, vectors, names, version=1)
    assert result["status"] == "failed"
    reason = result["reason"]
    assert reason.startswith("recall gate: served recall@10 0.") and "the most tried" in reason
    assert "ef_search 1024" in reason and "raise M or ef_construction" in reason
    assert load_published(tmp_path, "home").manifest["build_id"] == good["build_id"]

    routed = Surface("closeup", sharding="kmeans", shards=8, probe_clusters=1, min_recall=0.99)
    result = build_kmeans_and_release(tmp_path, routed, vectors, names)
    assert result["status"] == "failed"
    assert "weakest: k-means routing reaches 0." in result["reason"]
    assert result["reason"].endswith('at probe_clusters 1: raise probe_clusters or "auto"')
