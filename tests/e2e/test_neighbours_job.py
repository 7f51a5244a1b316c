"""`itemsage neighbours`: every product's top k neighbours in a surface's build, as a Delta
table, on local Spark."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from index_helpers import build_and_release, ids, unit_vectors

from index_builder.index_reader import load_published
from index_builder.neighbours import NeighboursConfig
from index_builder.surfaces import Surface
from itemsage_core.embedding.embeddings_table import read_table
from itemsage_core.errors import ItemSageError
from jobs import neighbours_job
from jobs.neighbours_job import write_neighbours

pytestmark = pytest.mark.spark


def quiet(_: str) -> None:
    pass


def published(root, version: int = 0, n: int = 700) -> np.ndarray:
    """A home build of n products in 2 hash groups of shards of at most 300 (P00004 and
    P00005 share one vector): the vectors."""
    vectors = unit_vectors(n, dim=16, seed=version)
    vectors[5] = vectors[4]
    surface = Surface("home", target_shard_size=300)
    assert build_and_release(root, surface, vectors, ids(n), version)["status"] == "published"
    return vectors


def test_every_product_gets_its_neighbours_once_and_a_rerun_commits_nothing(
    spark, tmp_path, monkeypatch
):
    monkeypatch.setattr(neighbours_job, "CHUNK", 150)  # several tasks per shard
    published(tmp_path / "idx")
    config = NeighboursConfig(str(tmp_path / "idx"), ("home",), str(tmp_path / "nb"), k=5)
    first = write_neighbours(spark, config, progress=quiet)["surfaces"]["home"]
    assert first["status"] == "written" and first["products"] == 700
    rows = read_table(str(tmp_path / "nb" / "home")).to_pylist()
    assert sorted(r["product_id"] for r in rows) == ids(700).to_pylist()  # one row each
    index = load_published(tmp_path / "idx", "home")
    for row in rows:
        found = [(n["product_id"], n["score"]) for n in row["neighbours"]]
        assert len(found) == 5 and row["product_id"] not in dict(found)  # no self-neighbour
        assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)
        assert (row["build_id"], row["table_version"], row["k"]) == (first["build_id"], 0, 5)
    sample = [r for r in rows if r["product_id"] in {"P00004", "P00123", "P00699"}]
    for row in sample:
        pid = row["product_id"]
        expected = index.search(index.vector_of(pid), 5, exclude=pid)
        assert [n["product_id"] for n in row["neighbours"]] == [p for p, _ in expected]
    twin = next(r for r in rows if r["product_id"] == "P00004")["neighbours"][0]
    assert twin["product_id"] == "P00005" and twin["score"] > 0.9999

    again = write_neighbours(spark, config, progress=quiet)["surfaces"]["home"]
    assert again["status"] == "unchanged" and again["version"] == first["version"]
    assert DeltaTable(str(tmp_path / "nb" / "home")).version() == first["version"]


def test_filters_leave_out_neighbours_of_the_same_brand_read_from_the_catalog(spark, tmp_path):
    published(tmp_path / "idx")
    brand = [None if i % 50 == 0 else f"b{i % 4}" for i in range(698)]
    catalog = pa.table(
        {
            "product_id": ids(698).to_pylist() + ["P00698"] * 2,
            "title": ["t"] * 700,
            "brand": brand + ["b1", "b2"],
        }
    )  # P00698 repeated, P00699 absent
    pq.write_table(catalog, tmp_path / "catalog.parquet")
    plain = NeighboursConfig(str(tmp_path / "idx"), ("home",), str(tmp_path / "nb"), k=5)
    assert write_neighbours(spark, plain, progress=quiet)["surfaces"]["home"]["version"] == 0
    config = dataclasses.replace(
        plain, exclude_same={"home": ("brand",)}, catalog=str(tmp_path / "catalog.parquet")
    )
    result = write_neighbours(spark, config, progress=quiet)["surfaces"]["home"]
    assert (result["status"], result["version"], result["short_of_k"]) == ("written", 1, 0)
    assert result["values"] == {"not_in_catalog": 2, "null": {"brand": 14}}
    of = dict(zip(ids(698).to_pylist(), brand))
    rows = read_table(str(tmp_path / "nb" / "home")).to_pylist()
    assert len(rows) == 700
    for row in rows:
        found = [n["product_id"] for n in row["neighbours"]]
        assert len(found) == 5
        if of.get(row["product_id"]) is not None:
            assert all(of.get(p) != of[row["product_id"]] for p in found)
    assert write_neighbours(spark, config, progress=quiet)["surfaces"]["home"]["status"] == (
        "unchanged"
    )
    typo = dataclasses.replace(config, exclude_same={"home": ("brnd",)})
    with pytest.raises(
        ItemSageError, match=r"neighbours_exclude_same: no column brnd \(nearest: brand\)"
    ):
        write_neighbours(spark, typo, progress=quiet)
    with pytest.raises(ItemSageError, match="same brand: pass --catalog"):
        write_neighbours(spark, dataclasses.replace(config, catalog=None), progress=quiet)


def test_a_killed_run_leaves_the_previous_table_and_a_rerun_writes_the_new_build(tmp_path):
    root, out = tmp_path / "idx", tmp_path / "nb"

    def run(**env) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "itemsage_cli.main", "neighbours", "--index", str(root),
             "--surface", "home", "--out", str(out), "-k", "3", "--master", "local[1]"],
            env={**os.environ, **env}, capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    published(root, version=0, n=300)
    assert run().returncode == 0
    before = DeltaTable(str(out / "home"))
    old_build = read_table(str(out / "home")).column("build_id")[0].as_py()
    published(root, version=1, n=320)
    killed = run(ITEMSAGE_CRASH_AT="before_commit")
    assert killed.returncode != 0
    table = DeltaTable(str(out / "home"))
    assert table.version() == before.version()
    assert set(read_table(str(out / "home")).column("build_id").to_pylist()) == {old_build}
    rerun = run()
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    table = read_table(str(out / "home"))
    assert table.num_rows == 320 and old_build not in table.column("build_id").to_pylist()
