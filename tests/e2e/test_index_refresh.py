"""`build-index --incremental`: a night's changes applied to the published build, on local Spark."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
from deltalake import write_deltalake

from index_builder.build_config import BuildIndexConfig
from index_builder.index_reader import load_published
from index_builder.layout import current_build_id
from index_builder.surfaces import parse_surfaces
from jobs.build_indexes import build_indexes

pytestmark = pytest.mark.spark
DIM = 32
SURFACES = {
    # ef_search pinned: these tests are about what a refresh does, not about tuning (the new
    # products of `churn` are outliers, which a graph tuned to the average finds less often)
    "defaults": {"target_shard_size": 1200, "recall_queries": 100, "ef_search": 64},
    "surfaces": {
        "home": {"filter": "in_stock", "shards": 3},
        "closeup": {"sharding": "kmeans", "shards": 3, "probe_clusters": 2},
    },
}


def quiet(_: str) -> None:
    pass


def world(n: int, seed: int = 0) -> dict:
    """Products P00000.. with clustered unit vectors, a content hash and an in_stock flag."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, DIM)).astype(np.float32)
    vectors = centres[rng.integers(0, 20, n)] + 0.5 * rng.standard_normal((n, DIM)).astype(
        np.float32
    )
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"P{i:05d}" for i in range(n)]
    return {
        "product_id": ids,
        "embedding": list(vectors),
        "content_hash": [f"h-{i}" for i in ids],
        "in_stock": [True] * n,
    }


def write(uri: str, rows: dict, model: str = "m1") -> None:
    table = pa.table(
        {
            "product_id": rows["product_id"],
            "embedding": pa.array(rows["embedding"], pa.list_(pa.float32())),
            "model_version": [model] * len(rows["product_id"]),
            "content_hash": rows["content_hash"],
            "in_stock": rows["in_stock"],
        }
    )
    write_deltalake(uri, table, mode="overwrite")


def churn(rows: dict, seed: int, share: float = 0.01) -> dict:
    """The next night: `share` of the products removed, changed (new vector and hash), added
    and flipped out of stock (each)."""
    rng = np.random.default_rng(seed)
    n = len(rows["product_id"])
    k = max(1, int(share * n))
    picked = rng.permutation(n)
    removed, changed, flipped = picked[:k], picked[k : 2 * k], picked[2 * k : 3 * k]
    out = {key: list(values) for key, values in rows.items()}
    for i in changed:
        vector = rng.standard_normal(DIM).astype(np.float32)
        out["embedding"][i] = vector / np.linalg.norm(vector)
        out["content_hash"][i] = f"h-{seed}-{i}"
    for i in flipped:
        out["in_stock"][i] = not out["in_stock"][i]
    keep = np.setdiff1d(np.arange(n), removed)
    out = {key: [values[i] for i in keep] for key, values in out.items()}
    new = world(k, seed=seed + 100)
    new["product_id"] = [f"N{seed}-{i}" for i in range(k)]
    new["content_hash"] = [f"h-{p}" for p in new["product_id"]]
    return {key: out[key] + new[key] for key in out}


def product_sets(root, surfaces=("home", "closeup")) -> dict[str, set[str]]:
    return {
        s: {pid for ids in load_published(root, s).ids for pid in ids.ids.tolist()}
        for s in surfaces
    }


def test_a_one_percent_churn_refresh_equals_a_full_build(spark, tmp_path):
    surfaces = list(parse_surfaces(SURFACES).values())
    table = str(tmp_path / "embeddings")
    rows = world(3000)
    write(table, rows)
    root = tmp_path / "indexes"
    first = build_indexes(spark, BuildIndexConfig(table, str(root), surfaces), progress=quiet)
    assert all(s["status"] == "published" for s in first["surfaces"].values())

    night = churn(rows, seed=1)
    write(table, night)
    refreshed = build_indexes(
        spark, BuildIndexConfig(table, str(root), surfaces, incremental=True), progress=quiet
    )
    full = build_indexes(
        spark, BuildIndexConfig(table, str(tmp_path / "full"), surfaces), progress=quiet
    )
    assert all(s["status"] == "published" for s in full["surfaces"].values())
    for name in ("home", "closeup"):
        result = refreshed["surfaces"][name]
        assert result["status"] == "published" and result["mode"] == "incremental", result
        assert result["recall_at_10"]["min"] >= 0.95
        assert result["lineage"]["base_build"] == first["surfaces"][name]["build_id"]
    assert product_sets(root) == product_sets(tmp_path / "full")
    in_stock = {p for p, s in zip(night["product_id"], night["in_stock"]) if s}
    assert product_sets(root)["home"] == in_stock
    lineage = refreshed["surfaces"]["home"]["lineage"]
    assert (lineage["new"], lineage["gone"], lineage["changed"]) == (30, 30 + 30, 30)  # gone, out
    assert lineage["base_table_version"] == 0 and lineage["table_version"] == 1
    # No removed product is ever returned; a changed product is found by its new vector.
    index = load_published(root, "home")
    gone = set(rows["product_id"]) - in_stock
    position = {p: i for i, p in enumerate(night["product_id"])}
    for pid in list(in_stock)[:50]:
        found = index.search(night["embedding"][position[pid]], k=10)
        assert found[0][0] == pid and not {p for p, _ in found} & gone


def refresh(spark, table: str, root, surfaces) -> dict:
    config = BuildIndexConfig(table, str(root), surfaces, incremental=True)
    return build_indexes(spark, config, progress=quiet)["surfaces"]


def test_each_rebuild_trigger_fires_and_says_why(spark, tmp_path):
    table, root = str(tmp_path / "embeddings"), tmp_path / "indexes"
    surfaces = list(parse_surfaces(SURFACES).values())
    rows = world(2000)
    write(table, rows)
    first = refresh(spark, table, root, surfaces)  # nothing published yet: a full build
    assert first["home"]["rebuilt_because"] == "no published build to refresh"

    def rebuilt(surfaces=surfaces, **changes) -> dict:
        write(table, {**rows, **changes})
        return {
            name: result.get("rebuilt_because")
            for name, result in refresh(spark, table, root, surfaces).items()
        }

    gone = {key: values[:1500] for key, values in rows.items()}  # a quarter removed
    assert "deleted points" in rebuilt(**gone)["home"]
    grown = world(7000)  # 5,500 new products on the 1,500 just rebuilt
    assert "5500 of 1500 products are new or changed" in rebuilt(**grown)["home"]
    write(table, rows, model="m2")
    assert refresh(spark, table, root, surfaces)["home"]["rebuilt_because"] == (
        "the model changed (m1 -> m2)"
    )
    more = {**SURFACES, "defaults": {**SURFACES["defaults"], "M": 24}}
    assert (
        refresh(spark, table, root, list(parse_surfaces(more).values()))["home"]["rebuilt_because"]
        == "surface parameters changed: M 16 -> 24"
    )
    # A current build with a file gone (a hand-pruned or half-copied root) is rebuilt, not read.
    build = root / "home" / "builds" / current_build_id(root, "home")
    next(build.glob("*.ids.parquet")).unlink()
    assert rebuilt(**rows)["home"].startswith("the current build lacks 1 files")
    assert current_build_id(root, "home") != build.name


def test_new_vectors_that_k_means_routing_would_miss_trigger_a_rebuild(spark, tmp_path):
    table, root = str(tmp_path / "embeddings"), tmp_path / "indexes"
    config = {"surfaces": {"closeup": {"sharding": "kmeans", "shards": 3, "probe_clusters": 1}}}
    surfaces = list(parse_surfaces(config).values())
    rng = np.random.default_rng(0)
    centres = np.eye(3, DIM, dtype=np.float32)  # three tight, far apart clusters
    vectors = centres[np.arange(3000) % 3] + 0.05 * rng.standard_normal((3000, DIM))
    rows = world(3000)
    rows["embedding"] = list(
        (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    )
    write(table, rows)
    assert refresh(spark, table, root, surfaces)["closeup"]["status"] == "published"
    spread = world(1500, seed=7)  # vectors all over the sphere, between the clusters
    spread["product_id"] = [f"S{i:05d}" for i in range(1500)]
    spread["content_hash"] = [f"h-{p}" for p in spread["product_id"]]
    write(table, {key: rows[key] + spread[key] for key in rows})
    reason = refresh(spark, table, root, surfaces)["closeup"]["rebuilt_because"]
    assert (
        reason.startswith("k-means routing to 1 clusters keeps ")
        and "below min_recall 0.95" in reason
    )


def test_five_nights_stay_within_the_gate_then_tombstones_trigger_a_rebuild(spark, tmp_path):
    """Five nights each remove 100 of 3,000 products and add none: deleted points accumulate
    (17% of each shard after five nights); the sixth removes 300 more, which takes the shards
    past max_tombstone_share (20%): that night is a full rebuild."""
    table, root = str(tmp_path / "embeddings"), tmp_path / "indexes"
    surfaces = [next(iter(parse_surfaces(SURFACES).values()))]  # home
    rows = world(3000)
    write(table, rows)
    refresh(spark, table, root, surfaces)
    order = np.random.default_rng(5).permutation(3000)
    nights = []
    for removed in (100, 200, 300, 400, 500, 800):
        keep = np.sort(order[: 3000 - removed])
        write(table, {key: [values[i] for i in keep] for key, values in rows.items()})
        nights.append(refresh(spark, table, root, surfaces)["home"])
        assert nights[-1]["status"] == "published"
        assert product_sets(root, ("home",))["home"] == {rows["product_id"][i] for i in keep}
    assert [n.get("mode") for n in nights] == ["incremental"] * 5 + [None]
    assert all(n["recall_at_10"]["min"] >= 0.95 for n in nights)
    tombstones = [n["lineage"]["tombstones"] for n in nights[:5]]
    assert tombstones == [100, 200, 300, 400, 500]
    assert "deleted points" in nights[5]["rebuilt_because"]
    manifest = load_published(root, "home").manifest
    assert "lineage" not in manifest and all(
        s.get("tombstones", 0) == 0 for s in manifest["shards"]
    )


def test_nights_of_changes_reuse_deleted_slots_and_keep_duplicates_served(spark, tmp_path):
    """Three nights of 1% churn on top of each other: every night equals the night's product
    set, changed products are found by their new vectors, deleted slots are reused by the
    additions, and of a duplicate group (one point, four products) the member that changed on
    the first night moves while the others stay served by the old point."""
    table, root = str(tmp_path / "embeddings"), tmp_path / "indexes"
    surfaces = [next(iter(parse_surfaces(SURFACES).values()))]  # home
    nights = [world(3000)]
    for night in (1, 2, 3):
        nights.append(churn(nights[-1], seed=night))
    untouched = set.intersection(
        *({p for p, s, h in zip(n["product_id"], n["in_stock"], n["content_hash"])
           if s and h == f"h-{p}"} for n in nights)
    )  # fmt: skip
    leader, *twins = sorted(untouched)[:4]
    vector = nights[0]["embedding"][0 if leader == "P00000" else int(leader[1:])]
    moved = nights[1]["embedding"][nights[1]["product_id"].index(sorted(untouched)[-1])]
    for number, rows in enumerate(nights):
        for pid in twins:
            where = rows["product_id"].index(pid)
            rows["embedding"][where] = moved if number and pid == twins[0] else vector
            rows["content_hash"][where] = (
                f"h-{pid}-moved" if number and pid == twins[0] else (f"h-{pid}")
            )
    write(table, nights[0])
    refresh(spark, table, root, surfaces)
    in_stock = set(nights[0]["product_id"])
    for rows in nights[1:]:
        write(table, rows)
        result = refresh(spark, table, root, surfaces)["home"]
        assert result["mode"] == "incremental" and result["recall_at_10"]["min"] >= 0.95
        before, in_stock = in_stock, {p for p, s in zip(rows["product_id"], rows["in_stock"]) if s}
        assert product_sets(root, ("home",))["home"] == in_stock
        assert result["lineage"]["new"] == len(in_stock - before)  # new, or back in stock
        assert result["lineage"]["gone"] == len(before - in_stock)
    index = load_published(root, "home")
    assert index.manifest["lineage"]["tombstones"] < 3 * 90  # deleted slots were reused
    position = {p: i for i, p in enumerate(rows["product_id"])}
    newest = [p for p in rows["product_id"] if p in in_stock][-40:]  # changed and new ones
    for pid in newest:
        best = index.search(rows["embedding"][position[pid]], k=1)[0]
        assert best[0] == pid or best[1] > 0.9999  # itself, or a product identical to it
    found = {p for p, _ in index.search(vector, k=3)}
    assert found == {leader, *twins[1:]}  # the group, less the member that moved
    assert twins[0] in {p for p, _ in index.search(moved, k=2)}


def test_a_refresh_killed_between_shard_uploads_leaves_the_old_build_and_a_rerun_completes(
    spark, tmp_path
):
    table, root = str(tmp_path / "embeddings"), tmp_path / "indexes"
    (tmp_path / "surfaces.toml").write_text('[surfaces.home]\nshards = 3\nfilter = "in_stock"\n')
    rows = world(2000)
    write(table, rows)
    surfaces = list(
        parse_surfaces({"surfaces": {"home": {"shards": 3, "filter": "in_stock"}}}).values()
    )
    refresh(spark, table, root, surfaces)
    before = current_build_id(root, "home")
    write(table, churn(rows, seed=2))

    def build(**env) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "itemsage_cli.main", "build-index", "--incremental",
             "--table", table, "--surfaces", str(tmp_path / "surfaces.toml"), "--out", str(root),
             "--master", "local[1]"],
            env={**os.environ, **env}, capture_output=True, text=True, timeout=300,
            start_new_session=True,
        )  # fmt: skip

    killed = build(ITEMSAGE_CRASH_AT="between_shard_uploads")
    assert killed.returncode == -signal.SIGKILL
    assert current_build_id(root, "home") == before
    assert load_published(root, "home").manifest["build_id"] == before
    rerun = build()
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert '"mode": "incremental"' in rerun.stdout
    assert current_build_id(root, "home") != before
    builds = sorted(p.name for p in (root / "home" / "builds").iterdir())
    assert len(builds) == 2  # the killed refresh's partial build was cleaned up
