"""Batch search through the reader: the same answers as one query at a time, found in one
native call per shard and merged with NumPy."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from index_helpers import ids, manifest_for, unit_vectors

from index_builder.index_reader import IdMap, ShardedIndex
from index_builder.neighbours import neighbour_rows
from index_builder.partitioning import train_centroids
from index_builder.same_values import SameValues
from index_builder.shard_build import ShardParams, build_group_shards, load_shard
from index_builder.surfaces import Surface
from itemsage_core.errors import ItemSageError

PARAMS = ShardParams(16, 100, 32, 50, 0.1, 0)
DIM = 16


def sharded(tmp_path, kmeans: bool, vectors=None) -> tuple[ShardedIndex, np.ndarray]:
    """900 products in 3 groups (hash, or 3 k-means clusters probing 2), ids P00000.., with
    duplicate groups (P00010..P00013 one vector, P00500 = P00501): the index and the vectors."""
    vectors = unit_vectors(900, DIM) if vectors is None else vectors
    product_ids = ids(900)
    vectors[11:14] = vectors[10]
    vectors[501] = vectors[500]
    centroids = train_centroids(vectors, 3, seed=0) if kmeans else None
    groups = np.argmax(vectors @ centroids.T, axis=1) if kmeans else np.arange(900) % 3
    entries = []
    for g in range(3):
        rows = np.flatnonzero(groups == g)
        entries += build_group_shards(
            product_ids.take(rows), vectors[rows], g, 200, tmp_path, PARAMS
        )
    surface = Surface("home", sharding="kmeans" if kmeans else "hash", probe_clusters=2)
    manifest = manifest_for(surface, "b1", entries, 0, DIM)
    manifest["params"]["ef_search"] = PARAMS.ef_search
    if kmeans:
        for shard in manifest["shards"]:
            shard["cluster"] = shard["group"]
    loaded = [load_shard(tmp_path, entry, DIM) for entry in manifest["shards"]]
    for shard, _ in loaded:
        shard.tune(PARAMS.ef_search)
    index = ShardedIndex(
        manifest, tmp_path, [i for i, _ in loaded], [IdMap.from_table(t) for _, t in loaded],
        centroids,
    )  # fmt: skip
    return index, vectors


def one_at_a_time(index: ShardedIndex, vector, k: int, exclude=None) -> list[tuple[str, float]]:
    """The reader's search before batches: shard by shard, a Python loop over the results."""
    vector = vector / np.linalg.norm(vector)
    shards = range(len(index.indexes))
    if index.centroids is not None:
        clusters = [entry["cluster"] for entry in index.manifest["shards"]]
        live = sorted(set(clusters))
        top = np.argsort(-(index.centroids[live] @ vector), kind="stable")[:2]
        shards = [s for s, c in enumerate(clusters) if c in {live[i] for i in top}]
    found = []
    for s in shards:
        wanted = min(k + (exclude is not None), index.ids[s].points)
        index.indexes[s].tune(max(PARAMS.ef_search, wanted))
        labels, distances = index.indexes[s].search(vector, wanted)
        found += [
            (pid, 1.0 - float(d))
            for label, d in zip(labels[0], distances[0])
            for pid in index.ids[s].products(int(label))
        ]
    found = [f for f in found if f[0] != exclude]
    return sorted(found, key=lambda f: (-f[1], f[0]))[:k]


@pytest.mark.parametrize("kmeans", [False, True])
def test_a_batch_answers_as_one_query_at_a_time_did(tmp_path, kmeans):
    index, vectors = sharded(tmp_path, kmeans)
    queries = np.concatenate([vectors[:60], unit_vectors(40, DIM, seed=3), vectors[[10, 500]]])
    own = [f"P{i:05d}" for i in range(60)] + [None] * 40 + ["P00010", "P00500"]
    for k, exclude in ((10, None), (7, own), (1000, None)):
        batch = index.search_batch(queries, k, exclude, threads=1)
        for i, query in enumerate(queries):
            reference = one_at_a_time(index, query, k, None if exclude is None else exclude[i])
            assert [p for p, _ in batch.row(i)] == [p for p, _ in reference]
            # the same up to the rounding of the query's normalisation (one row vs a matrix)
            assert np.allclose([s for _, s in batch.row(i)], [s for _, s in reference], atol=1e-6)
    threaded = index.search_batch(queries, 10, own, threads=3)
    assert (threaded.ids == index.search_batch(queries, 10, own).ids).all()
    assert [p for p, _ in index.search(vectors[5], 3)] == [
        p for p, _ in one_at_a_time(index, vectors[5], 3)
    ]


def test_duplicates_expand_and_excluded_ids_never_come_back(tmp_path):
    index, vectors = sharded(tmp_path, kmeans=False)
    got = index.search_batch(vectors[[10, 500]], 4, exclude=["P00011", "P00501"])
    assert set(got.ids[0][:3]) == {"P00010", "P00012", "P00013"}
    assert got.ids[1][0] == "P00500" and "P00501" not in got.ids[1]
    assert np.all(np.diff(got.scores, axis=1) <= 0)  # best first
    everything = index.search_batch(vectors[:3], 2000)
    assert (everything.ids[:, 900:] == None).all() and (everything.ids[:, :900] != None).all()  # noqa: E711


def test_product_vectors_are_found_by_id_and_bad_queries_are_named(tmp_path):
    index, vectors = sharded(tmp_path, kmeans=True)
    picked = ["P00899", "P00000", "P00450"]
    assert np.allclose(index.vectors_of(picked), vectors[[899, 0, 450]], atol=1e-6)
    with pytest.raises(ItemSageError, match="'Q1' is not in this surface's index"):
        index.vectors_of(["P00001", "Q1"])
    bad = vectors[:3].copy()
    bad[2] = 0
    with pytest.raises(ItemSageError, match=r"zero or not finite \(row 2\)"):
        index.search_batch(bad)
    with pytest.raises(ItemSageError, match="have 8 dimensions, the index 16"):
        index.search_batch(np.ones((2, 8)))


def test_the_query_command_answers_a_file_of_ids_or_vectors(tmp_path):
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq
    from click.testing import CliRunner
    from index_helpers import build_and_release

    from index_builder.index_reader import load_published
    from itemsage_cli.main import cli

    vectors, product_ids = unit_vectors(300, DIM), ids(300)
    build_and_release(tmp_path / "idx", Surface("home"), vectors, product_ids)
    index = load_published(tmp_path / "idx", "home")
    (tmp_path / "ids.txt").write_text("P00003\n\nP00250\n")
    base = ["query", "--index", str(tmp_path / "idx"), "--surface", "home", "-k", "4"]
    lines = CliRunner().invoke(cli, [*base, "--ids-file", str(tmp_path / "ids.txt")])
    assert lines.exit_code == 0, lines.output
    rows = [json.loads(line) for line in lines.output.splitlines()]
    assert [r["query"] for r in rows] == ["P00003", "P00250"]
    for row in rows:
        expected = index.search(index.vector_of(row["query"]), 4, exclude=row["query"])
        assert [(n["product_id"], n["score"]) for n in row["neighbours"]] == expected
    table = pa.table(
        {
            "product_id": ["a", "b"],
            "embedding": pa.array(vectors[[7, 9]].tolist(), pa.list_(pa.float32())),
        }
    )
    pq.write_table(table, tmp_path / "queries.parquet")
    out = tmp_path / "found.parquet"
    done = CliRunner().invoke(
        cli, [*base, "--vectors-file", str(tmp_path / "queries.parquet"), "--out", str(out),
              "--threads", "2"],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    found = pq.read_table(out).to_pylist()
    assert [r["query"] for r in found] == ["a", "b"]
    assert [n["product_id"] for n in found[0]["neighbours"]][0] == "P00007"
    both = CliRunner().invoke(cli, [*base, "--ids-file", str(tmp_path / "ids.txt"),
                                    "--product-id", "P00001"])  # fmt: skip
    assert both.exit_code == 2 and "exactly one of --product-id" in both.output


def brands(n: int, of: np.ndarray) -> SameValues:
    """Products P00000.. of brand `of[i]` (a negative brand: null), the last one unknown."""
    table = pa.table(
        {
            "product_id": ids(n - 1),
            "brand": pa.array(of[: n - 1], pa.int64(), mask=of[: n - 1] < 0),
        }
    )
    return SameValues.from_table(table)


def filtered_exactly(index, vectors, same: SameValues, pid: str, k: int) -> list[str]:
    """The top k of a product among those not sharing its brand: the whole ranking (every
    shard's every point), filtered."""
    row = int(pid[1:])
    ranking = [p for p, _ in one_at_a_time(index, vectors[row], 900, exclude=pid)]
    shared = same.shared(np.array([pid], object), np.array([ranking], object))[0]
    return [p for p, s in zip(ranking, shared) if not s][:k]


def test_neighbour_filters_leave_out_same_brand_products_and_fetch_more_when_needed(tmp_path):
    """Brands of 60 products clumped around their own centre: a product's first 20 results
    are all its own brand, so the filter must fetch more; null brands and unknown products
    filter nothing."""
    rng = np.random.default_rng(3)
    of = np.arange(900) // 60
    centres = unit_vectors(15, DIM, seed=9)
    vectors = centres[of] + 0.08 * rng.standard_normal((900, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    of[::97] = -1  # null brand
    index, vectors = sharded(tmp_path, False, vectors)
    same = brands(900, of)
    product_ids = np.array(ids(900).to_pylist(), object)
    rows, short = neighbour_rows(index, product_ids, vectors, 5, threads=2, same=same)
    assert short == 0 and rows.num_rows == 900
    brand = dict(zip(product_ids[:899], of[:899]))
    for row in rows.to_pylist():
        pid, found = row["product_id"], [n["product_id"] for n in row["neighbours"]]
        assert len(found) == 5 and pid not in found
        if pid in brand and brand[pid] >= 0:
            assert all(brand.get(p) != brand[pid] for p in found)
        scores = [n["score"] for n in row["neighbours"]]
        assert scores == sorted(scores, reverse=True)
    sample = ["P00001", "P00097", "P00500", "P00720", "P00899"]  # null brand, unknown id
    by_id = {r["product_id"]: [n["product_id"] for n in r["neighbours"]] for r in rows.to_pylist()}
    for pid in sample:
        assert by_id[pid] == filtered_exactly(index, vectors, same, pid, 5)
    assert set(by_id["P00899"]) & set(product_ids[840:899])  # unknown: its own brand's products


def test_a_product_whose_every_neighbour_shares_its_value_is_short_and_counted(tmp_path):
    index, vectors = sharded(tmp_path, False)
    same = brands(900, np.zeros(900, np.int64))  # one brand (P00899 unknown)
    product_ids = np.array(ids(900).to_pylist(), object)
    rows, short = neighbour_rows(index, product_ids[:50], vectors[:50], 5, same=same)
    assert short == 50
    assert all(
        len(r) == 1 and r[0]["product_id"] == "P00899"
        for r in rows.column("neighbours").to_pylist()
    )
