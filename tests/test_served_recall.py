"""Served recall (index_builder/served_recall.py): a loaded build measured through the reader on
a seeded sample of its products, against exact search written out here in NumPy."""

from __future__ import annotations

import numpy as np
from index_helpers import build_and_release, build_kmeans_and_release, clustered, ids

from index_builder.index_reader import load_published
from index_builder.served_recall import draw, parts, served
from index_builder.served_tuning import apply
from index_builder.surfaces import Surface

N = 1500


def numpy_recall(index, vectors: np.ndarray, product_ids: list[str], rows: np.ndarray):
    """Each sampled product's recall@10 as `itemsage query` answers it, one query at a time,
    against a brute-force top 10 over every vector but its own (ties count)."""
    recalls = []
    for row in rows:
        scores = vectors @ vectors[row]
        scores[row] = -np.inf
        tenth = np.sort(scores)[-10]
        answer = index.search(vectors[row], 10, exclude=product_ids[row])
        found = [scores[product_ids.index(pid)] for pid, _ in answer]
        recalls.append(np.mean(np.array(found + [-np.inf] * (10 - len(found))) >= tenth - 1e-6))
    return np.array(recalls)


def test_served_recall_is_the_query_paths_recall_against_exact_search(tmp_path):
    vectors, names = clustered(N), ids(N)
    surface = Surface("home", ef_search=10, M=4, ef_construction=20, min_recall=0.0)
    assert build_and_release(tmp_path, surface, vectors, names, groups=3)["status"] == "published"
    index = load_published(tmp_path, "home")
    drawn = draw(index, 300, seed=4)
    measured, _ = served(index, drawn)
    # the sample's rows are products of the build, in the reader's order
    product_ids = drawn.ids.tolist()
    expected = numpy_recall(index, drawn.vectors, product_ids, drawn.queries)
    assert measured.queries == 300 and measured.recall == expected.mean() < 1.0
    assert measured.stderr == expected.std(ddof=1) / np.sqrt(300) > 0
    assert measured.qps > 0
    again = draw(index, 300, seed=4)
    assert (again.queries == drawn.queries).all()
    assert not (draw(index, 300, seed=5).queries == drawn.queries).all()


def test_a_sample_larger_than_the_build_takes_every_product(tmp_path):
    vectors, names = clustered(200), ids(200)
    build_and_release(tmp_path, Surface("home", min_recall=0.0), vectors, names)
    index = load_published(tmp_path, "home")
    drawn = draw(index, 1000)
    assert len(drawn.queries) == 200 and drawn.exact.shape == (200, 10)


def test_duplicates_found_in_place_of_each_other_count(tmp_path):
    vectors = clustered(600)
    vectors[300:330] = vectors[0]  # 31 products of one vector
    build_and_release(tmp_path, Surface("home", ef_search=256), vectors, ids(600))
    index = load_published(tmp_path, "home")
    measured, _ = served(index, draw(index, 600))
    assert measured.recall == 1.0 and measured.stderr == 0.0


def test_parts_say_what_routing_and_each_shard_lose(tmp_path):
    vectors, names = clustered(N, centres=300, spread=1.0), ids(N)
    surface = Surface("closeup", sharding="kmeans", shards=6, probe_clusters=6, min_recall=0.0)
    assert build_kmeans_and_release(tmp_path, surface, vectors, names)["status"] == "published"
    index = load_published(tmp_path, "closeup")
    drawn = draw(index, 400, seed=1)
    everywhere = parts(index, drawn, served(index, drawn)[1])
    assert everywhere["routing"] == 1.0 and len(everywhere["shards"]) == len(index.indexes)
    apply(index, {"probe_clusters": 1})
    one, found = served(index, drawn)
    nearest = parts(index, drawn, found)
    assert nearest["routing"] < 1.0
    # with exact shards, what one probe loses is what routing loses
    assert all(share is None or share > 0.95 for share in nearest["shards"])
    assert abs(one.recall - nearest["routing"]) < 0.05
