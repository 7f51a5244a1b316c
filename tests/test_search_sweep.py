"""The report's measure of a build (index_builder/search_sweep.py): recall against exact search
as the search setting varies, on in-process builds of each index type."""

from __future__ import annotations

import numpy as np
import pytest
from index_helpers import build_and_release, ids
from test_index_types import N, clustered, surface

from index_builder import search_sweep, served_recall
from index_builder.index_reader import load_published
from index_builder.index_types.shard import EF_STEPS


@pytest.mark.parametrize("index", ["hnsw", "ivf-pq"])
def test_sweep_measures_each_setting_and_leaves_the_published_ones(tmp_path, index):
    result = build_and_release(tmp_path, surface(index, ef_search="auto"), clustered(), ids(N))
    loaded = load_published(str(tmp_path), "home")
    published = search_sweep.published_settings(loaded.manifest)
    drawn = served_recall.draw(loaded, 200, seed=1)
    assert len(drawn.queries) == 200 and drawn.vectors.shape == (N, 32)
    # Exact top 10: the best other products by brute force, the query itself left out.
    scores = drawn.vectors[drawn.queries] @ drawn.vectors.T
    scores[np.arange(200), drawn.queries] = -np.inf
    best = np.sort(scores, axis=1)[:, -10:][:, ::-1]
    exact = np.take_along_axis(scores, drawn.exact, axis=1)
    np.testing.assert_allclose(exact, best, atol=1e-6)

    points, at_published, found = search_sweep.sweep(loaded, drawn)
    key = "nprobe" if index == "ivf-pq" else "ef_search"
    assert search_sweep.swept_key(loaded.manifest) == key
    settings = [p.setting for p in points]
    if index == "ivf-pq":  # capped at the fewest lists of any shard
        lists = min(s["train"]["nlist"] for s in loaded.manifest["shards"])
        assert settings[0] == 1 and settings[-1] == lists and len(set(settings)) == len(settings)
    else:
        assert settings == list(EF_STEPS)
    assert points[-1].recall >= 0.97 and points[-1].recall >= points[0].recall
    assert all(p.qps > 0 for p in points)
    # The published settings are back in place: the manifest's own, and as measured now.
    assert search_sweep.published_settings(loaded.manifest) == published
    assert at_published.recall >= result["recall_at_10"]["min"] - 0.05
    again, _, _ = search_sweep.measure(loaded, drawn)
    assert again == at_published.recall
    assert found.shape == (200, 10) and np.all(np.diff(found, axis=1) <= 1e-6)
