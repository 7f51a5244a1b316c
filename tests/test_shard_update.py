"""One shard updated in place of a rebuild: the product set, tombstones, duplicates, recall."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
from index_helpers import ids, unit_vectors

from index_builder.shard_build import ShardParams, build_group_shards, load_shard
from index_builder.shard_update import update_shard

PARAMS = ShardParams(16, 200, 64, 200, 0.1, 0)


def built(tmp_path, product_ids: pa.Array, vectors: np.ndarray) -> dict:
    """One shard of the products (content keys 0..n-1) built into tmp_path: its entry."""
    (base,) = build_group_shards(
        product_ids, vectors, 0, 5000, tmp_path, PARAMS, content_keys=np.arange(len(vectors))
    )
    return base


def added(product_ids: pa.Array) -> pa.Table:
    return pa.table({"product_id": product_ids, "content_key": np.arange(len(product_ids)) + 10**6})


def loaded(base_dir, out, entry: dict, dim: int):
    """The updated shard loaded from `out`, a carried-over index file copied there first."""
    for described in entry["files"].values():
        if not (out / described["path"]).exists():
            shutil.copy(base_dir / described["path"], out / described["path"])
    return load_shard(out, {**entry, "shard": 0}, dim)


def test_an_updated_shard_holds_the_new_product_set_and_passes_the_gate(tmp_path):
    vectors, product_ids = unit_vectors(2000, dim=32), ids(2000)
    base = built(tmp_path, product_ids, vectors)
    removed = product_ids.slice(0, 150)  # deleted, or whose vectors changed (re-added below)
    changed = product_ids.slice(100, 50)
    new_ids = pa.concat_arrays([changed, ids(120, prefix="N")])
    new_vectors = unit_vectors(170, dim=32, seed=1)
    new_vectors[-1] = vectors[1500]  # a new product identical to a live one shares its label
    out = tmp_path / "new"
    out.mkdir()
    entry = update_shard(tmp_path, base, removed, added(new_ids), new_vectors, out, PARAMS, 32)

    expected = (set(product_ids.to_pylist()) - set(removed.to_pylist())) | set(new_ids.to_pylist())
    assert "deleted" not in entry["files"]  # a rewritten index holds its deletions
    index, table = load_shard(out, {**entry, "shard": 0}, 32)
    assert set(table.column("product_id").to_pylist()) == expected
    keys = dict(zip(*(table.column(c).to_pylist() for c in ("product_id", "content_key"))))
    assert keys["P01999"] == 1999 and keys["N00000"] == 10**6 + 50
    assert entry["count"] == len(expected) == 2000 - 150 + 170
    assert entry["changes"] == {"removed": 150, "added": 170}
    labels = dict(zip(*(table.column(c).to_pylist() for c in ("product_id", "label"))))
    assert labels["N00119"] == labels["P01500"]  # the duplicate joined the existing point
    assert entry["tombstones"] == 0  # 150 points deleted, 169 new ones took their slots
    assert entry["vectors"] - entry["tombstones"] == len(set(labels.values()))
    assert entry["recall_at_10"] >= 0.95
    # No removed product is ever found, and a changed product is found by its new vector.
    found = index.search(vectors[:100], 10)[0]
    assert not set(found.ravel()) & (set(range(2000)) - set(labels.values()))
    top = index.search(new_vectors[0], 1)[0][0][0]
    assert top == labels[changed[0].as_py()]
    assert json.loads(json.dumps(entry))  # a manifest entry


def shard_without(tmp_path, products: int, removed: int):
    """A shard of `products` built, then refreshed with its first `removed` products taken out
    and none added: the vectors, the new entry, and the loaded (index, id map table)."""
    vectors, product_ids = unit_vectors(products, dim=16), ids(products)
    base = built(tmp_path, product_ids, vectors)
    out = tmp_path / "new"
    out.mkdir()
    entry = update_shard(
        tmp_path, base, product_ids.slice(0, removed), added(ids(0)),
        np.empty((0, 16), np.float32), out, PARAMS, 16,
    )  # fmt: skip
    assert entry["files"]["index"] == base["files"]["index"]  # carried over as it is
    assert not (out / base["files"]["index"]["path"]).exists()
    return vectors, entry, *loaded(tmp_path, out, entry, 16)


def test_tombstones_are_counted_when_removals_outnumber_additions(tmp_path):
    vectors, entry, index, table = shard_without(tmp_path, 500, 100)
    assert entry["count"] == 400 and entry["tombstones"] == 100 and entry["vectors"] == 500
    assert table.num_rows == 400
    found = index.search(vectors[:100], 5)[0]
    assert not set(found.ravel()) & set(range(100))  # deleted points are never returned


def test_one_member_of_a_duplicate_group_changing_keeps_the_others_served(tmp_path):
    vectors, product_ids = unit_vectors(300, dim=16), ids(300)
    vectors[10:13] = vectors[9]  # P00009..P00012: one point, four products
    base = built(tmp_path, product_ids, vectors)
    assert base["vectors"] == 297
    out = tmp_path / "new"
    out.mkdir()
    moved = unit_vectors(1, dim=16, seed=9)
    entry = update_shard(
        tmp_path, base, pa.array(["P00010"]), added(pa.array(["P00010"])), moved, out, PARAMS, 16
    )
    index, table = load_shard(out, {**entry, "shard": 0}, 16)
    labels = dict(zip(*(table.column(c).to_pylist() for c in ("product_id", "label"))))
    assert labels["P00009"] == labels["P00011"] == labels["P00012"] != labels["P00010"]
    assert entry["tombstones"] == 0 and entry["vectors"] == 298  # the group's point stays
    assert index.search(vectors[9], 1)[0][0][0] == labels["P00009"]
    assert index.search(moved[0], 1)[0][0][0] == labels["P00010"]


def test_the_reader_counts_only_the_live_points_of_a_refreshed_shard(tmp_path):
    from index_builder.index_reader import IdMap

    _, entry, _, table = shard_without(tmp_path, 20, 15)
    assert IdMap.from_table(table).points == 5 and entry["tombstones"] == 15


def test_deletions_listed_beside_a_carried_index_survive_the_next_update(tmp_path):
    vectors, entry, index, _ = shard_without(tmp_path, 500, 100)
    assert entry["files"]["deleted"]["path"].endswith(".deleted.npy")
    assert index.count() == 500  # the file still holds the deleted points
    night2 = tmp_path / "night2"
    night2.mkdir()
    new_vectors = unit_vectors(30, dim=16, seed=5)
    second = update_shard(
        tmp_path / "new", entry, pa.array(["P00100"]), added(ids(30, prefix="N")), new_vectors,
        night2, PARAMS, 16,
    )  # fmt: skip
    assert "deleted" not in second["files"]  # rewritten: the deletions are in the index file
    index, table = loaded(tmp_path / "new", night2, second, 16)
    assert table.num_rows == 400 - 1 + 30
    assert second["tombstones"] == 101 - 30  # the new points reused deleted slots
    found = index.search(vectors[:101], 5)[0]
    live = set(table.column("label").to_pylist())
    assert set(found.ravel()) <= live  # no deleted point, old or new, is ever returned


def test_every_added_duplicate_joins_its_twin_as_a_full_build_would(tmp_path):
    """Added products whose vectors equal live points' share those points, found by their
    bytes, however poorly the graph would find them (a sparse graph, as after many nights)."""
    vectors, product_ids = unit_vectors(1500, dim=32), ids(1500)
    sparse = ShardParams(2, 10, 10, 50, 0.1, 0)
    (base,) = build_group_shards(
        product_ids, vectors, 0, 5000, tmp_path, sparse, content_keys=np.arange(1500)
    )
    twins = np.random.default_rng(2).choice(1500, 300, replace=False)
    out = tmp_path / "new"
    out.mkdir()
    new_ids = ids(300, prefix="Q")
    entry = update_shard(
        tmp_path, base, pa.array([], pa.string()), added(new_ids), vectors[twins], out, sparse, 32
    )
    _, table = load_shard(out, {**entry, "shard": 0}, 32)
    labels = dict(zip(*(table.column(c).to_pylist() for c in ("product_id", "label"))))
    assert entry["vectors"] == base["vectors"] == 1500  # no new point
    assert all(labels[f"Q{i:05d}"] == labels[f"P{twin:05d}"] for i, twin in enumerate(twins))
