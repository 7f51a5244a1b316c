"""Index building without Spark: surfaces config, grouping, shards, manifest, gate, publish,
query."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from index_helpers import build_and_release, build_dir, ids, manifest_for, unit_vectors

from index_builder import layout as index_layout
from index_builder.build_release import release_build
from index_builder.index_reader import ShardedIndex, load_published, read_vector, roll_back
from index_builder.layout import (
    build_key,
    current_build_id,
    current_pointer,
    pointer_name,
    surface_key,
)
from index_builder.partitioning import (
    ClusterPlan,
    hash_groups,
    nearest_centroids,
    routing_recall,
    train_centroids,
)
from index_builder.shard_build import ShardParams, build_group_shards, exact_top_k
from index_builder.surfaces import Surface, load_surfaces, parse_surfaces
from itemsage_core.errors import ItemSageError

CONF = Path(__file__).resolve().parents[1] / "conf"


def test_shipped_surfaces_configs_parse():
    surfaces = {s.name: s for s in load_surfaces(CONF / "surfaces.toml")}
    assert set(surfaces) == {"home", "closeup", "search"}
    assert surfaces["closeup"].sharding == "kmeans" and surfaces["home"].sharding == "hash"
    assert surfaces["home"].filter and surfaces["home"].M == 16
    assert [s.name for s in load_surfaces(CONF / "surfaces-flipkart.toml", ["search"])] == [
        "search"
    ]


@pytest.mark.parametrize(
    "config, message",
    [
        ({"surfaces": {"home": {"M0": 3}}}, "unknown keys ['M0']"),
        ({"surfaces": {"../etc": {}}}, "name must match"),
        ({"surfaces": {"home": {"sharding": "random"}}}, "sharding must be one of"),
        ({"surfaces": {"home": {"min_recall": 2.0}}}, "min_recall"),
        ({"surfaces": {"home": {"ef_search": 0}}}, "ef_search must be a positive integer"),
        ({"surfaces": {}}, "no [surfaces.NAME] table"),
        ({"surface": {"home": {}}}, "unknown top-level keys"),
    ],
)
def test_bad_surfaces_config_is_a_clear_error(config, message):
    with pytest.raises(
        ItemSageError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")
    ):
        parse_surfaces(config)


def test_unknown_surface_selected(tmp_path):
    with pytest.raises(ItemSageError, match="defines no surface nope"):
        load_surfaces(CONF / "surfaces.toml", ["nope"])


def test_shard_counts_follow_the_target_size():
    assert Surface("a", target_shard_size=100).shard_count(250) == 3
    assert Surface("a", shards=4, target_shard_size=100).shard_count(250) == 4
    assert Surface("a", shards=2, target_shard_size=100).shard_count(250) == 3  # never above
    assert Surface("a", sharding="kmeans", shards=5).shard_count(250) == 5


def test_hash_groups_are_stable_and_independent_of_batching():
    all_ids = ids(1000)
    whole = hash_groups(all_ids, 7)
    parts = np.concatenate(
        [hash_groups(all_ids.slice(0, 333), 7), hash_groups(all_ids.slice(333), 7)]
    )
    assert np.array_equal(whole, parts) and whole.min() >= 0 and whole.max() == 6
    assert np.array_equal(whole, hash_groups(all_ids.to_pylist(), 7))
    assert np.bincount(whole).min() > 100  # spread over all groups


def test_cluster_plan_spreads_oversized_clusters_over_groups():
    plan = ClusterPlan.from_counts({0: 250, 1: 40}, clusters=3, target_shard_size=100)
    assert plan.parts == (3, 1, 0) and plan.groups == 4
    assert plan.cluster_of_group() == [0, 0, 0, 1]
    groups = plan.group_of(np.array([0] * 250 + [1] * 40), ids(290))
    assert set(groups[:250]) == {0, 1, 2} and set(groups[250:]) == {3}


def test_kmeans_assigns_each_vector_its_nearest_centroid():
    vectors = unit_vectors(500)
    centroids = train_centroids(vectors, 5, seed=0)
    assert centroids.shape == (5, 32)
    assert np.allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-5)
    nearest = nearest_centroids(vectors, centroids)[:, 0]
    assert np.array_equal(nearest, np.argmax(vectors @ centroids.T, axis=1))


def test_routing_recall_measures_what_probing_fewer_clusters_loses():
    vectors = unit_vectors(2000, dim=16)
    centroids = train_centroids(vectors, 8, seed=0)
    every = routing_recall(vectors, centroids, probes=8, queries=200, noise=0.1, seed=0)
    some = [routing_recall(vectors, centroids, p, 200, 0.1, 0) for p in (1, 2, 4)]
    assert every == 1.0 and some == sorted(some) and some[0] < 0.9


PARAMS = ShardParams(
    M=16, ef_construction=200, ef_search=200, recall_queries=50, query_noise=0.1, seed=0
)


def test_an_oversized_group_is_cut_into_shards_of_at_most_the_target(tmp_path):
    entries = build_group_shards(ids(250), unit_vectors(250), 3, 100, tmp_path, PARAMS)
    assert [e["count"] for e in entries] == [84, 83, 83]
    assert [e["part"] for e in entries] == [0, 1, 2] and {e["group"] for e in entries} == {3}
    seen = []
    for entry in entries:
        seen += (
            pq.read_table(tmp_path / entry["files"]["ids"]["path"]).column("product_id").to_pylist()
        )
        assert entry["recall_at_10"] == 1.0
    assert sorted(seen) == ids(250).to_pylist()


def test_query_results_equal_exact_search_on_a_small_index(tmp_path):
    vectors, product_ids = unit_vectors(300), ids(300)
    surface = Surface("home", ef_search=300, target_shard_size=80)
    result = build_and_release(tmp_path, surface, vectors, product_ids)
    assert result["status"] == "published" and result["shards"] >= 4
    index = load_published(tmp_path, "home")
    exact = exact_top_k(vectors, vectors[:20], 11)
    for q in range(20):
        found = index.search(vectors[q], k=10, exclude=product_ids[q].as_py())
        expected = [product_ids[int(i)].as_py() for i in exact[q] if i != q][:10]
        assert [pid for pid, _ in found] == expected
        scores = [s for _, s in found]
        assert scores == sorted(scores, reverse=True)
        assert np.allclose(scores, vectors[[int(p[1:]) for p, _ in found]] @ vectors[q], atol=1e-5)
    assert np.allclose(index.vector_of("P00007"), vectors[7], atol=1e-6)


def test_identical_vectors_are_indexed_once_and_every_product_is_found(tmp_path):
    # 300 copies of one vector: as separate HNSW points they would cut themselves off the graph.
    base = unit_vectors(700, dim=16)
    vectors = np.concatenate([base, np.repeat(base[:1], 300, axis=0)])
    product_ids = ids(1000)
    surface = Surface("home", ef_search=32, target_shard_size=1000)
    result = build_and_release(tmp_path, surface, vectors, product_ids, groups=1)
    assert result["status"] == "published" and result["recall_at_10"]["min"] >= 0.95
    index = load_published(tmp_path, "home")
    (shard,) = index.manifest["shards"]
    assert shard["count"] == 1000 and shard["vectors"] == 700
    copies = {product_ids[0].as_py()} | set(product_ids.slice(700).to_pylist())
    found = index.search(base[0], k=400)
    assert {pid for pid, _ in found[:301]} == copies
    assert np.allclose([s for _, s in found[:301]], 1.0, atol=1e-5)
    assert np.allclose(index.vector_of("P00950"), base[0])
    excluded = index.search(base[0], k=5, exclude="P00950")
    assert "P00950" not in [pid for pid, _ in excluded] and len(excluded) == 5


def test_the_recall_gate_blocks_a_bad_build_and_keeps_the_previous_one(tmp_path):
    vectors, product_ids = unit_vectors(600), ids(600)
    good = build_and_release(tmp_path, Surface("home"), vectors, product_ids)
    assert good["status"] == "published"
    bad_surface = Surface("home", M=2, ef_construction=10, ef_search=1, min_recall=0.95)
    bad = build_and_release(tmp_path, bad_surface, vectors, product_ids, version=1)
    assert bad["status"] == "failed" and bad["recall_at_10"]["min"] < 0.95
    assert bad["reason"].startswith("recall gate: served recall@10 0.")
    assert "at ef_search 1 is below min_recall 0.95; weakest: shard 0 (hnsw" in bad["reason"]
    assert bad["reason"].endswith('raise ef_search or set it to "auto"')
    assert bad["below_min_recall"]["served"] == bad["served"]["recall_at_10"] < 0.95
    assert current_build_id(tmp_path, "home") == good["build_id"]
    assert not build_dir(tmp_path, "home", bad["build_id"]).exists()
    assert load_published(tmp_path, "home").manifest["build_id"] == good["build_id"]


def test_retention_keeps_the_newest_builds(tmp_path):
    vectors, product_ids = unit_vectors(50), ids(50)
    results = [
        build_and_release(tmp_path, Surface("home", keep_builds=2), vectors, product_ids, version=v)
        for v in range(4)
    ]
    assert index_layout.build_ids(tmp_path, "home") == [
        results[3]["build_id"],
        results[2]["build_id"],
    ]
    assert results[3]["deleted_builds"] == [results[1]["build_id"]]


def test_damaged_builds_are_detected_and_the_newest_valid_one_answers(tmp_path):
    vectors, product_ids = unit_vectors(200), ids(200)
    older = build_and_release(tmp_path, Surface("home"), vectors, product_ids)
    newer = build_and_release(tmp_path, Surface("home"), vectors, product_ids, version=1)
    directory = build_dir(tmp_path, "home", newer["build_id"])
    manifest = json.loads((directory / "manifest.json").read_text())
    shard = directory / manifest["shards"][0]["files"]["index"]["path"]
    original = shard.read_bytes()

    shard.write_bytes(original[: len(original) // 2])  # truncated
    with pytest.raises(ItemSageError, match="does not match its checksum"):
        ShardedIndex.load(tmp_path, "home", newer["build_id"])
    flipped = bytearray(original)
    flipped[len(flipped) // 3] ^= 0xFF
    shard.write_bytes(bytes(flipped))  # one flipped byte
    with pytest.raises(ItemSageError, match="truncated or corrupted"):
        ShardedIndex.load(tmp_path, "home", newer["build_id"])
    warnings = []
    assert (
        load_published(tmp_path, "home", warnings.append).manifest["build_id"] == older["build_id"]
    )
    assert "instead of the current one" in warnings[0] and newer["build_id"] in warnings[0]

    shard.write_bytes(original)
    (directory / "manifest.json").write_text(
        (directory / "manifest.json").read_text().replace('"home"', '"hom3"', 1)
    )
    with pytest.raises(ItemSageError, match="manifest.json does not match its checksum"):
        ShardedIndex.load(tmp_path, "home", newer["build_id"])

    seq = current_pointer(tmp_path, "home").seq + 1  # a pointer to a build that is not there
    (tmp_path / "home" / pointer_name(seq)).write_text('{"build_id": "20991231T000000000000Z-v9"}')
    warnings.clear()
    assert (
        load_published(tmp_path, "home", warnings.append).manifest["build_id"] == older["build_id"]
    )
    assert "20991231T000000000000Z-v9" in warnings[0]


def test_roll_back_serves_an_earlier_checked_build_and_deletes_nothing(tmp_path):
    vectors, product_ids = unit_vectors(200), ids(200)
    builds = [
        build_and_release(tmp_path, Surface("home"), vectors, product_ids, version=v)["build_id"]
        for v in range(3)
    ]
    assert roll_back(tmp_path, "home") == {
        "surface": "home",
        "previous": builds[2],
        "current": builds[1],
        "skipped": [],
    }
    assert load_published(tmp_path, "home").manifest["build_id"] == builds[1]
    assert index_layout.build_ids(tmp_path, "home") == builds[::-1]  # nothing deleted
    # A damaged build is skipped; with none left, one clear error and CURRENT stays.
    roll_back(tmp_path, "home", builds[2])  # forward again, by id
    shard = next(build_dir(tmp_path, "home", builds[1]).glob("*.hnsw"))
    shard.write_bytes(shard.read_bytes()[:100])
    rolled = roll_back(tmp_path, "home")
    assert rolled["current"] == builds[0] and builds[1] in rolled["skipped"][0]
    shard = next(build_dir(tmp_path, "home", builds[0]).glob("*.hnsw"))
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(ItemSageError, match="no usable build to roll back to"):
        roll_back(tmp_path, "home")
    assert current_build_id(tmp_path, "home") == builds[0]


def test_query_command_falls_back_and_says_so(tmp_path):
    from click.testing import CliRunner

    from itemsage_cli.main import cli

    vectors, product_ids = unit_vectors(200), ids(200)
    older = build_and_release(tmp_path, Surface("home"), vectors, product_ids)["build_id"]
    newer = build_and_release(tmp_path, Surface("home"), vectors, product_ids, version=1)
    shard = next(build_dir(tmp_path, "home", newer["build_id"]).glob("*.hnsw"))
    shard.write_bytes(shard.read_bytes()[:-10])  # truncated
    result = CliRunner().invoke(
        cli,
        [
            "query",
            "--index",
            str(tmp_path),
            "--surface",
            "home",
            "--product-id",
            "P00007",
            "-k",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"warning: using build {older}" in result.output
    assert f"build {newer['build_id']}: " in result.output and "checksum" in result.output
    assert f"surface home, build {older}" in result.output
    assert len([line for line in result.output.splitlines() if "  P0" in line]) == 3


def test_no_usable_build_is_one_clear_error(tmp_path):
    with pytest.raises(ItemSageError, match="no usable build of surface 'home'"):
        load_published(tmp_path, "home")


def test_an_unfinished_build_is_invisible_and_publish_is_one_create(tmp_path, monkeypatch):
    vectors, product_ids = unit_vectors(100), ids(100)
    first = build_and_release(tmp_path, Surface("home"), vectors, product_ids)
    unfinished = build_dir(tmp_path, "home", index_layout.new_build_id(5))
    unfinished.mkdir(parents=True)
    (unfinished / "shard-00000-00.hnsw").write_bytes(b"partial")
    assert load_published(tmp_path, "home").manifest["build_id"] == first["build_id"]

    def crash_on_switch(src, dst):
        raise OSError("killed during the switch")

    monkeypatch.setattr(os, "link", crash_on_switch)  # the one step that moves CURRENT
    with pytest.raises(OSError, match="killed during the switch"):
        build_and_release(tmp_path, Surface("home"), vectors, product_ids, version=6)
    monkeypatch.undo()
    assert current_build_id(tmp_path, "home") == first["build_id"]
    assert load_published(tmp_path, "home").manifest["build_id"] == first["build_id"]
    assert [p.name for p in (tmp_path / "home").iterdir() if p.name.startswith(".")] == []


def test_a_build_published_over_a_moved_current_is_refused(tmp_path):
    """Optimistic concurrency: a build publishes only over the pointer it started from."""
    vectors, product_ids = unit_vectors(100), ids(100)
    first = build_and_release(tmp_path, Surface("home"), vectors, product_ids)
    base = current_pointer(tmp_path, "home")
    second = build_and_release(tmp_path, Surface("home"), vectors, product_ids, version=1)
    assert second["status"] == "published" and base.build_id == first["build_id"]
    late = index_layout.new_build_id(2)
    late_dir = build_dir(tmp_path, "home", late)
    late_dir.mkdir()
    entries = build_group_shards(
        product_ids, vectors, 0, 1000, late_dir, ShardParams(16, 100, 64, 50, 0.3, 0)
    )
    manifest = manifest_for(Surface("home"), late, entries, 2, vectors.shape[1])
    result = release_build(tmp_path, Surface("home"), manifest, base)
    assert result["status"] == "failed" and "CURRENT moved while build" in result["reason"]
    assert f"now {second['build_id']} is current" in result["reason"]
    assert current_build_id(tmp_path, "home") == second["build_id"]
    assert not late_dir.exists()  # the loser's build is deleted; the winner's serves
    assert load_published(tmp_path, "home").manifest["build_id"] == second["build_id"]


def test_a_legacy_current_file_is_read_and_replaced_on_the_next_publish(tmp_path):
    vectors, product_ids = unit_vectors(100), ids(100)
    first = build_and_release(tmp_path, Surface("home"), vectors, product_ids)
    for pointer in (tmp_path / "home").glob("CURRENT-*"):
        pointer.unlink()
    (tmp_path / "home" / "CURRENT").write_text(first["build_id"] + "\n")  # format 1's pointer
    assert current_pointer(tmp_path, "home") == index_layout.Pointer(0, first["build_id"])
    assert load_published(tmp_path, "home").manifest["build_id"] == first["build_id"]
    second = build_and_release(tmp_path, Surface("home"), vectors, product_ids, version=1)
    assert current_pointer(tmp_path, "home") == index_layout.Pointer(1, second["build_id"])
    assert not (tmp_path / "home" / "CURRENT").exists()


def test_surface_names_cannot_leave_the_index_root(tmp_path):
    for name in ("../outside", "/etc", "home/../../x", ""):
        with pytest.raises(ItemSageError, match="invalid surface name"):
            surface_key(name)
    with pytest.raises(ItemSageError, match="invalid build id"):
        build_key("home", "../../etc")


def test_query_vectors_read_from_npy_json_and_text(tmp_path):
    np.save(tmp_path / "q.npy", np.arange(4, dtype=np.float32))
    (tmp_path / "q.json").write_text("[0, 1, 2, 3]")
    (tmp_path / "q.txt").write_text("0 1\n2 3\n")
    for name in ("q.npy", "q.json", "q.txt"):
        assert read_vector(tmp_path / name).tolist() == [0, 1, 2, 3]
    (tmp_path / "bad.txt").write_text("zero one")
    with pytest.raises(ItemSageError, match="cannot read a query vector"):
        read_vector(tmp_path / "bad.txt")


def test_groups_cross_the_shuffle_as_exact_bytes():
    from index_builder.partitioning import pack_groups
    from itemsage_core.storage.arrow_ipc import from_ipc

    vectors, product_ids = unit_vectors(7, dim=5), ids(7)
    batch = pa.RecordBatch.from_pydict(
        {"product_id": product_ids, "embedding": pa.array(vectors.tolist(), pa.list_(pa.float32()))}
    )
    (out,) = pack_groups("home", lambda b: [1, 0, 1, 1, 0, 2, 1])([batch])
    assert out.column("surface").to_pylist() == ["home"] * 3
    assert out.column("group").to_pylist() == [0, 1, 2]
    for group, rows in ((0, [1, 4]), (1, [0, 2, 3, 6]), (2, [5])):
        products = from_ipc(out.column("products")[group].as_py()).column("product_id")
        assert products.to_pylist() == [f"P{r:05d}" for r in rows]
        got = np.frombuffer(out.column("vectors")[group].as_py(), np.float32).reshape(-1, 5)
        assert np.array_equal(got, vectors[rows])  # bit for bit


def test_verify_checks_the_current_build_without_falling_back(tmp_path):
    from index_builder.index_reader import verify_current

    vectors, product_ids = unit_vectors(300), ids(300)
    build_and_release(tmp_path, Surface("home", target_shard_size=100), vectors, product_ids)
    newer = build_and_release(
        tmp_path, Surface("home", target_shard_size=100), vectors, product_ids, version=1
    )
    result = verify_current(tmp_path, "home", samples=12)
    assert result["build_id"] == newer["build_id"] and result["products"] == 300
    assert result["checked"] == result["found_themselves"] == 12
    directory = build_dir(tmp_path, "home", newer["build_id"])
    shard = next(directory.glob("*.hnsw"))
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(ItemSageError, match="truncated or corrupted"):
        verify_current(tmp_path, "home")
    for pointer in (tmp_path / "home").glob("CURRENT-*"):
        pointer.unlink()
    with pytest.raises(ItemSageError, match="has no CURRENT build"):
        verify_current(tmp_path, "home")


def test_query_shows_catalog_columns_beside_each_product(tmp_path):
    """Neighbours a person can judge: titles and chosen columns, through the mapping."""
    import subprocess
    import sys

    from click.testing import CliRunner

    from itemsage_cli.main import cli

    vectors, product_ids = unit_vectors(200), ids(200)
    build_and_release(tmp_path / "idx", Surface("home"), vectors, product_ids)
    n = len(product_ids)
    pq.write_table(
        pa.table(
            {
                "sku": product_ids,
                "name": [f"title {i}" for i in range(n)],
                "maker": [f"brand {i % 7}" for i in range(n)],
            }
        ),
        tmp_path / "catalog.parquet",
    )
    (tmp_path / "m.toml").write_text(
        '[features.product_id]\nfrom = "sku"\n'
        '[features.title]\nfrom = "name"\n'
        '[features.brand]\nfrom = "maker"\n'
    )
    base = [
        "query",
        "--index",
        str(tmp_path / "idx"),
        "--surface",
        "home",
        "--product-id",
        "P00007",
        "-k",
        "3",
        "--catalog",
        str(tmp_path / "catalog.parquet"),
        "--mapping",
        str(tmp_path / "m.toml"),
    ]
    shown = CliRunner().invoke(cli, [*base, "--show", "title,brand"])
    assert shown.exit_code == 0, shown.output
    assert "query  P00007  title 7 | brand 0" in shown.output
    lines = [line for line in shown.output.splitlines() if line[:3].strip().isdigit()]
    assert len(lines) == 3
    for line in lines:
        number = int(line.split()[2][1:])
        assert line.endswith(f"  title {number} | brand {number % 7}")
    as_json = CliRunner().invoke(cli, [*base, "--show", "title,brand", "--json"])
    results = json.loads(as_json.stdout)
    assert [set(r) for r in results] == [{"product_id", "score", "title", "brand"}] * 3
    assert all(r["title"] == f"title {int(r['product_id'][1:])}" for r in results)

    wrong = CliRunner().invoke(cli, [*base, "--show", "titel"])
    assert wrong.exit_code == 1
    assert "no column 'titel' (did you mean 'title'?)" in wrong.output
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "itemsage_cli.main",
            *base[:-4],
            "--catalog",
            str(tmp_path / "nope"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"error: no such file or directory: {tmp_path / 'nope'}"
