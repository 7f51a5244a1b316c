"""Index types per surface (hnsw, hnsw-sq8, ivf-pq, auto under max_memory_mb): each builds,
passes or fails the recall gate with its search setting tuned, answers through the one reader,
records its sizes, and round-trips through publish and load."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from index_helpers import build_and_release, build_dir, ids
from index_helpers import clustered as clustered_vectors

from index_builder.index_reader import ShardedIndex, load_published, verify_current
from index_builder.index_types.ivf_pq import IvfPqShard
from index_builder.layout import build_key, read_build_manifest, write_build_manifest
from index_builder.refresh_plan import rebuild_reason
from index_builder.surfaces import Surface
from itemsage_cli.main import cli
from itemsage_core.errors import ItemSageError
from itemsage_core.storage.store import Store

DIM = 32
N = 3000


def clustered(n: int = N, dim: int = DIM, seed: int = 0) -> np.ndarray:
    """Unit vectors around 40 centres (catalog-like: categories), a few exact duplicates."""
    vectors = clustered_vectors(n, dim, seed=seed)
    vectors[7] = vectors[3]
    return vectors


def surface(index: str, **keys) -> Surface:
    defaults = {"target_shard_size": 2000, "recall_queries": 100, "pq_bytes": 8}
    return Surface("home", index=index, **{**defaults, **keys})


def built(tmp_path, index: str, **keys) -> tuple[dict, np.ndarray]:
    vectors = clustered()
    return build_and_release(tmp_path, surface(index, **keys), vectors, ids(N)), vectors


@pytest.mark.parametrize("index", ["hnsw", "hnsw-sq8", "ivf-pq"])
def test_each_type_builds_passes_the_gate_and_finds_each_indexed_vector_first(tmp_path, index):
    result, vectors = built(tmp_path, index, ef_search="auto")
    assert result["status"] == "published", result
    manifest = read_build_manifest(Store(str(tmp_path)), build_key("home", result["build_id"]))
    key = "nprobe" if index == "ivf-pq" else "ef_search"
    for shard in manifest["shards"]:
        assert shard["index"] == index and shard["recall_at_10"] >= 0.95
        assert shard["search"]["tuned"] and shard["search"][key] >= 1
        assert shard["bytes_per_vector"] == shard["files"]["index"]["bytes"] / shard["vectors"]
        assert shard["resident_bytes"] is not None
        if index != "hnsw":
            assert shard["train"]["sample"] == shard["vectors"]  # all of them: < train_sample
            assert "vectors" in shard["files"]
    assert manifest["format"] == "itemsage-index/2"
    assert manifest["memory"]["types"] == [index]

    loaded = load_published(tmp_path, "home")
    for s, entry in enumerate(manifest["shards"]):  # the reader searches at the tuned setting
        if index == "ivf-pq":
            assert isinstance(loaded.indexes[s], IvfPqShard)
            assert loaded.indexes[s].index.nprobe == entry["search"]["nprobe"]
    product_ids = ids(N).to_pylist()
    found = loaded.search_batch(vectors[:300], k=1).ids[:, 0]
    same = [f == p or (p, f) in {("P00003", "P00007"), ("P00007", "P00003")}
            for p, f in zip(product_ids[:300], found)]  # fmt: skip
    assert np.mean(same) >= 0.99
    assert np.allclose(loaded.vectors_of(["P00010"])[0], vectors[10])
    check = verify_current(tmp_path, "home", samples=40)
    assert check["found_themselves"] == check["checked"]
    assert {s["index"] for s in check["per_shard"]} == {index}
    assert all(s["resident_bytes_now"] is not None for s in check["per_shard"])


def test_quantised_types_take_less_memory_per_vector(tmp_path):
    sizes = {}
    for index in ("hnsw", "hnsw-sq8", "ivf-pq"):
        result, _ = built(tmp_path / index, index)
        manifest = read_build_manifest(
            Store(str(tmp_path / index)), build_key("home", result["build_id"])
        )
        sizes[index] = manifest["memory"]["bytes_per_vector"]
    assert sizes["hnsw"] > sizes["hnsw-sq8"] > sizes["ivf-pq"]


def test_a_type_that_cannot_meet_the_gate_at_any_setting_publishes_nothing(tmp_path):
    vectors = clustered()
    good = build_and_release(tmp_path, surface("hnsw"), vectors, ids(N))
    assert good["status"] == "published"
    poor = surface("ivf-pq", pq_bytes=1, rerank=0, min_recall=0.99)  # 1-byte codes, no re-rank
    result = build_and_release(tmp_path, poor, vectors, ids(N), version=1)
    assert result["status"] == "failed"
    assert "recall gate" in result["reason"] and ", the most tried" in result["reason"]
    assert "at nprobe" in result["reason"]
    assert load_published(tmp_path, "home").manifest["build_id"] == good["build_id"]
    assert not build_dir(tmp_path, "home", result["build_id"]).exists()


def test_auto_picks_a_smaller_type_as_the_budget_shrinks_and_fails_when_none_fits(tmp_path):
    picked = {}
    for mb in (1.0, 0.3, 0.1):  # shards of 1,500 vectors: 0.4, 0.25 and 0.06 MB
        result, _ = built(tmp_path / str(mb), "auto", max_memory_mb=mb)
        assert result["status"] == "published", result
        manifest = read_build_manifest(
            Store(str(tmp_path / str(mb))), build_key("home", result["build_id"])
        )
        for shard in manifest["shards"]:
            assert shard["index_bytes"] <= mb * 2**20
            assert shard["auto"]["budget_bytes"] == int(mb * 2**20)
        picked[mb] = manifest["memory"]["types"]
    assert picked == {1.0: ["hnsw"], 0.3: ["hnsw-sq8"], 0.1: ["ivf-pq"]}
    result, _ = built(tmp_path / "tiny", "auto", max_memory_mb=0.001)
    assert result["status"] == "failed" and "max_memory_mb 0.001" in result["reason"]


def test_a_fixed_type_over_its_budget_publishes_nothing(tmp_path):
    result, _ = built(tmp_path, "hnsw", max_memory_mb=0.05)
    assert result["status"] == "failed"
    assert result["reason"].startswith("max_memory_mb 0.05: shard 0's hnsw index takes")


def test_a_format_1_build_without_types_still_loads(tmp_path):
    result, vectors = built(tmp_path, "hnsw")
    key = build_key("home", result["build_id"])
    manifest = read_build_manifest(Store(str(tmp_path)), key)
    manifest["format"] = "itemsage-index/1"
    for shard in manifest["shards"]:  # what a format-1 build's entries lack
        for field in ("index", "search", "index_bytes", "bytes_per_vector", "resident_bytes"):
            del shard[field]
    del manifest["memory"]
    write_build_manifest(Store(str(tmp_path)), key, manifest)
    loaded = ShardedIndex.load(tmp_path, "home", result["build_id"])
    assert loaded.search(vectors[10], k=1)[0][0] == "P00010"
    ef = manifest["params"]["ef_search"]  # as served: tuned
    assert isinstance(ef, int) and all(i.index.ef == ef for i in loaded.indexes)


def test_surface_keys_are_checked_and_quantised_surfaces_rebuild_on_refresh():
    with pytest.raises(ItemSageError, match="index must be one of hnsw, hnsw-sq8, ivf-pq, auto"):
        Surface("home", index="pq")
    with pytest.raises(ItemSageError, match='index = "auto" needs max_memory_mb'):
        Surface("home", index="auto")
    with pytest.raises(ItemSageError, match='nprobe must be a positive integer or "auto"'):
        Surface("home", nprobe=0)
    base = {"content_keys": True, "config": Surface("home").params()}
    assert "rebuilt in full" in rebuild_reason(Surface("home", index="ivf-pq"), base)
    old = {"content_keys": True, "config": {"M": 16}}  # a build from before the new keys
    assert rebuild_reason(Surface("home"), old) is None


def test_verify_index_prints_each_shards_type_and_sizes(tmp_path):
    built(tmp_path, "hnsw-sq8")
    run = CliRunner().invoke(cli, ["verify-index", "--index", str(tmp_path), "--surface", "home"])
    assert run.exit_code == 0, run.output
    report = json.loads(run.output)
    assert report["memory"]["types"] == ["hnsw-sq8"] and report["memory"]["bytes_per_vector"] > 0
    assert [s["index"] for s in report["per_shard"]] == ["hnsw-sq8"] * report["shards"]
