"""The index-building job on real local Spark and hnswlib, from a real embeddings Delta table."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from index_builder.build_config import BuildIndexConfig
from index_builder.index_reader import load_published
from index_builder.layout import build_key, current_build_id, read_build_manifest
from index_builder.surfaces import load_surfaces
from itemsage_core.embedding.embed_run import EmbedConfig
from itemsage_core.embedding.embeddings_table import read_table
from itemsage_core.storage.parquet_io import write_parquet_dataset
from itemsage_core.storage.store import Store
from jobs.build_indexes import build_indexes
from jobs.embed_catalog import embed_catalog

pytestmark = pytest.mark.spark

SURFACES = """
[defaults]
target_shard_size = 60
keep_builds = 2

[surfaces.home]
filter = "in_stock AND country IN ('US', 'GB')"

[surfaces.closeup]
sharding = "kmeans"
shards = 3
probe_clusters = 3

[surfaces.search]
filter = "in_stock AND price < 40"
shards = 2
"""


def build_dir(root, surface: str, build_id: str) -> Path:
    """A build's directory under a local index root."""
    return Path(root) / build_key(surface, build_id)


def manifest_of(directory: Path) -> dict:
    """The checked manifest of the build in a local directory."""
    return read_build_manifest(
        Store(directory.parents[2]), build_key(directory.parent.parent.name, directory.name)
    )


def quiet(_):
    pass


@pytest.fixture(scope="module")
def embedded(spark, tmp_path_factory, small_world_dir, tiny_model_dir):
    """The small world embedded twice: version 0 (all 400), version 1 (the first 300)."""
    out = tmp_path_factory.mktemp("indexes")
    table_uri = str(out / "embeddings")
    embed_catalog(
        spark,
        EmbedConfig(str(small_world_dir / "catalog"), str(tiny_model_dir), table_uri),
        progress=quiet,
    )
    (out / "surfaces.toml").write_text(SURFACES)
    return out, table_uri


def eligible(catalog, surface: str) -> set[str]:
    frame = catalog.to_pandas()
    if surface == "home":
        frame = frame[frame.in_stock & frame.country.isin(["US", "GB"])]
    elif surface == "search":
        frame = frame[frame.in_stock & (frame.price < 40)]
    return set(frame.product_id)


def shard_ids(directory, manifest) -> list[list[str]]:
    return [
        pq.read_table(directory / s["files"]["ids"]["path"]).column("product_id").to_pylist()
        for s in manifest["shards"]
    ]


def test_every_eligible_product_in_exactly_one_shard_per_surface(
    spark, embedded, small_world, small_world_dir
):
    out, table_uri = embedded
    surfaces = load_surfaces(out / "surfaces.toml")
    root = out / "index"
    summary = build_indexes(
        spark,
        BuildIndexConfig(table_uri, str(root), surfaces, catalog=str(small_world_dir / "catalog")),
        progress=quiet,
    )
    vectors = read_table(table_uri)
    by_id = dict(
        zip(vectors.column("product_id").to_pylist(), vectors.column("embedding").to_pylist())
    )
    for surface in ("home", "closeup", "search"):
        result = summary["surfaces"][surface]
        assert result["status"] == "published", result
        directory = build_dir(root, surface, current_build_id(root, surface))
        manifest = manifest_of(directory)
        assert manifest["table"] == {"uri": table_uri, "version": 0}
        assert manifest["config"]["ef_search"] == "auto" and manifest["params"]["dim"] == 256
        assert manifest["params"]["ef_search"] == manifest["served"]["settings"]["ef_search"]
        shards = shard_ids(directory, manifest)
        flat = [pid for shard in shards for pid in shard]
        assert len(flat) == len(set(flat))  # no id in two shards
        assert set(flat) == eligible(small_world.catalog, surface)  # none missing, none extra
        assert max(len(s) for s in shards) <= 60  # target size never exceeded
        assert [s["count"] for s in manifest["shards"]] == [len(s) for s in shards]
        assert manifest["served"]["recall_at_10"] >= 0.95
        # The indexed vectors are the table's.
        first = manifest["shards"][0]
        import hnswlib

        index = hnswlib.Index(space="ip", dim=256)
        index.load_index(str(directory / first["files"]["index"]["path"]))
        assert np.allclose(index.get_items([0])[0], by_id[shards[0][0]], atol=1e-6)
    closeup = manifest_of(build_dir(root, "closeup", current_build_id(root, "closeup")))
    assert closeup["centroids"] and {s["cluster"] for s in closeup["shards"]} <= {0, 1, 2}
    assert len(closeup["shards"]) >= 7  # 400 products in shards of <= 60
    # An oversized cluster is planned as several groups (tasks), from its true size.
    clusters: dict[int, list] = {}
    for shard in closeup["shards"]:
        groups, count = clusters.setdefault(shard["cluster"], [set(), 0])
        groups.add(shard["group"])
        clusters[shard["cluster"]][1] = count + shard["count"]
    assert {c: len(g) for c, (g, _) in clusters.items()} == {
        c: -(-n // 60) for c, (_, n) in clusters.items()
    }


def test_query_cli_gives_cosine_scores_best_first(spark, embedded, small_world_dir, tmp_path):
    out, table_uri = embedded
    root = tmp_path / "index"
    build_indexes(
        spark,
        BuildIndexConfig(
            table_uri,
            str(root),
            load_surfaces(out / "surfaces.toml", ["search"]),
            catalog=str(small_world_dir / "catalog"),
        ),
        progress=quiet,
    )
    manifest = manifest_of(build_dir(root, "search", current_build_id(root, "search")))
    product = shard_ids(build_dir(root, "search", manifest["build_id"]), manifest)[0][0]
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "itemsage_cli.main",
            "query",
            "--index",
            str(root),
            "--surface",
            "search",
            "--product-id",
            product,
            "-k",
            "5",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout)
    table = read_table(table_uri)
    ids = table.column("product_id").to_pylist()
    vectors = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
    eligible_rows = [
        ids.index(pid)
        for pid in set(ids)
        & {
            pid
            for s in shard_ids(build_dir(root, "search", manifest["build_id"]), manifest)
            for pid in s
        }
    ]
    query = vectors[ids.index(product)]
    exact = sorted(
        ((float(vectors[i] @ query), ids[i]) for i in eligible_rows if ids[i] != product),
        reverse=True,
    )[:5]
    assert [r["product_id"] for r in results] == [pid for _, pid in exact]
    assert np.allclose([r["score"] for r in results], [s for s, _ in exact], atol=1e-5)


def test_recall_gate_failure_leaves_the_previous_build_current(
    spark, embedded, small_world_dir, tmp_path
):
    out, table_uri = embedded
    root = tmp_path / "index"
    build = [
        sys.executable,
        "-m",
        "itemsage_cli.main",
        "build-index",
        "--table",
        table_uri,
        "--out",
        str(root),
        "--surface",
        "home",
        "--master",
        "local[1]",
        "--catalog",
        str(small_world_dir / "catalog"),
    ]
    first = subprocess.run(
        build + ["--surfaces", str(out / "surfaces.toml")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    before = current_build_id(root, "home")
    (tmp_path / "bad.toml").write_text(
        SURFACES.replace(
            "[surfaces.home]",
            "[surfaces.home]\nM = 2\nef_construction = 10\nef_search = 1\nmin_recall = 0.99",
        )
    )
    bad = subprocess.run(
        build + ["--surfaces", str(tmp_path / "bad.toml")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 1
    assert ("error: surface 'home' not published: recall gate: served recall@10 0.") in bad.stderr
    assert "at ef_search 1 is below min_recall 0.99; weakest: shard " in bad.stderr
    summary = json.loads(bad.stdout)["surfaces"]["home"]
    assert summary["status"] == "failed" and summary["served"]["recall_at_10"] < 0.99
    assert summary["current_build"] == before == current_build_id(root, "home")
    assert not build_dir(root, "home", summary["build_id"]).exists()


def test_a_pinned_table_version_reproduces_an_earlier_build(
    spark, embedded, small_world, small_world_dir, tiny_model_dir, tmp_path
):
    out, _ = embedded
    table_uri_2 = str(tmp_path / "embeddings")
    embed_catalog(
        spark,
        EmbedConfig(str(small_world_dir / "catalog"), str(tiny_model_dir), table_uri_2),
        progress=quiet,
    )
    write_parquet_dataset(small_world.catalog.slice(0, 300), tmp_path / "smaller")
    embed_catalog(
        spark,
        EmbedConfig(str(tmp_path / "smaller"), str(tiny_model_dir), table_uri_2),
        progress=quiet,
    )
    assert DeltaTable(table_uri_2).version() == 1
    surfaces = load_surfaces(out / "surfaces.toml", ["closeup"])
    root = tmp_path / "index"
    builds = {}
    for version in (0, 1, 0):
        summary = build_indexes(
            spark,
            BuildIndexConfig(table_uri_2, str(root), surfaces, table_version=version),
            progress=quiet,
        )
        directory = build_dir(root, "closeup", summary["surfaces"]["closeup"]["build_id"])
        manifest = manifest_of(directory)
        assert manifest["table"]["version"] == version
        content = (
            shard_ids(directory, manifest),
            [s["files"]["index"]["sha256"] for s in manifest["shards"]],
        )
        builds.setdefault(version, []).append(content)
    assert sum(map(len, builds[1][0][0])) == 300
    assert sum(map(len, builds[0][0][0])) == 400
    assert builds[0][0] == builds[0][1]  # same shards, ids and index bytes


def test_a_filter_on_catalog_columns_without_catalog_fails_its_surface(spark, embedded, tmp_path):
    out, table_uri = embedded
    summary = build_indexes(
        spark,
        BuildIndexConfig(
            table_uri, str(tmp_path / "index"), load_surfaces(out / "surfaces.toml", ["home"])
        ),
        progress=quiet,
    )
    home = summary["surfaces"]["home"]
    assert home["status"] == "failed" and home["current_build"] is None
    assert home["reason"].startswith(
        "filter \"in_stock AND country IN ('US', 'GB')\" does not apply: no column in_stock "
        "(pass --catalog to filter on its columns); columns: product_id, embedding, "
    )
    assert not (tmp_path / "index").exists()


def build_index_cli(*args: str) -> subprocess.CompletedProcess:
    """`itemsage build-index ARGS` as a user runs it: a subprocess, Spark's default console."""
    return subprocess.run(
        [sys.executable, "-m", "itemsage_cli.main", "build-index", "--master", "local[1]", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "ITEMSAGE_SPARK_LOG_LEVEL"},
    )


def errors_of(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_a_surface_whose_filter_matches_nothing_fails_alone(
    spark, embedded, small_world_dir, tmp_path
):
    """Observed: one empty surface aborted build-index, and no surface was published."""
    out, table_uri = embedded
    catalog, root = str(small_world_dir / "catalog"), tmp_path / "index"
    (tmp_path / "before.toml").write_text('[surfaces.deals]\nfilter = "price < 20"\n')
    build_indexes(
        spark,
        BuildIndexConfig(
            table_uri, str(root), load_surfaces(tmp_path / "before.toml"), catalog=catalog
        ),
        progress=quiet,
    )
    before = current_build_id(root, "deals")
    (tmp_path / "surfaces.toml").write_text(SURFACES + '\n[surfaces.deals]\nfilter = "price < 0"\n')
    run = build_index_cli(
        "--table",
        table_uri,
        "--surfaces",
        str(tmp_path / "surfaces.toml"),
        "--out",
        str(root),
        "--catalog",
        catalog,
        "--surface",
        "home",
        "--surface",
        "deals",
        "--surface",
        "search",
        "--summary-json",
        str(tmp_path / "summary.json"),
    )
    assert run.returncode == 1, run.stderr[-3000:]
    assert errors_of(run.stderr) == [
        "error: surface 'deals' not published: no products after the filter 'price < 0'"
    ]
    surfaces = json.loads((tmp_path / "summary.json").read_text())["surfaces"]
    assert surfaces == json.loads(run.stdout)["surfaces"]
    assert surfaces["deals"] == {
        "status": "failed",
        "current_build": before,
        "reason": "no products after the filter 'price < 0'",
    }
    assert current_build_id(root, "deals") == before
    for name in ("home", "search"):
        assert surfaces[name]["status"] == "published"
        assert current_build_id(root, name) == surfaces[name]["build_id"]


def test_an_unknown_filter_column_names_the_columns_and_the_nearest(
    embedded, small_world_dir, tmp_path
):
    """Observed: with --catalog and --mapping, "(pass --catalog ...)", the table's columns only,
    after Spark's JSON log of the error with its Java stack trace."""
    _, table_uri = embedded
    (tmp_path / "mapping.toml").write_text('[extras.cost]\nfrom = "price"\ntype = "double"\n')
    (tmp_path / "surfaces.toml").write_text('[surfaces.search]\nfilter = "costt < 40"\n')
    run = build_index_cli(
        "--table",
        table_uri,
        "--surfaces",
        str(tmp_path / "surfaces.toml"),
        "--out",
        str(tmp_path / "index"),
        "--catalog",
        str(small_world_dir / "catalog"),
        "--mapping",
        str(tmp_path / "mapping.toml"),
    )
    assert run.returncode == 1, run.stderr[-3000:]
    (error,) = errors_of(run.stderr)
    assert error.startswith(
        "error: surface 'search' not published: filter 'costt < 40' does "
        "not apply: no column costt (nearest: cost); columns: product_id, "
        "embedding, model_version, "
    )
    assert {"title", "brand", "cost", "country", "in_stock"} <= set(
        error.split("; columns: ")[1].split(", ")
    )
    assert "--catalog" not in error
    for noise in ("Traceback", "\tat ", "org.apache", '"logger"', " WARN "):
        assert noise not in run.stderr
    assert not (tmp_path / "index").exists()


def test_flipkart_indexes_through_its_mapping(
    spark, tmp_path, flipkart_path, flipkart_mapping, tiny_model_dir
):
    from itemsage_cli.demo_config import PROJECT_CONF
    from itemsage_core.contracts.column_mapping import load_mapping

    mapping = load_mapping(flipkart_mapping)
    table_uri = str(tmp_path / "flipkart")
    embed_catalog(
        spark,
        EmbedConfig(str(flipkart_path), str(tiny_model_dir), table_uri, mapping),
        progress=quiet,
    )
    root = tmp_path / "index"
    summary = build_indexes(
        spark,
        BuildIndexConfig(
            table_uri,
            str(root),
            load_surfaces(PROJECT_CONF / "surfaces-flipkart.toml"),
            catalog=str(flipkart_path),
            mapping=mapping,
        ),
        progress=quiet,
    )
    catalog = pq.read_table(flipkart_path).to_pandas()
    priced = catalog.discounted_price.notna()
    for surface, result in summary["surfaces"].items():
        assert result["status"] == "published", (surface, result)
    assert summary["surfaces"]["closeup"]["products"] == 19996
    assert 0 < summary["surfaces"]["search"]["products"] <= priced.sum()
    assert summary["surfaces"]["home"]["products"] < summary["surfaces"]["search"]["products"]


def test_quantised_surfaces_build_on_spark_answer_queries_and_feed_the_neighbours_job(
    spark, embedded, tmp_path
):
    """ivf-pq and hnsw-sq8 shards built by the Spark tasks (quantisers trained on a sample
    drawn there), served by the one reader and the neighbours job; an --incremental run
    rebuilds them in full."""
    from index_builder.neighbours import NeighboursConfig
    from index_builder.surfaces import parse_surfaces
    from jobs.neighbours_job import write_neighbours

    _, table_uri = embedded
    surfaces = parse_surfaces(
        {
            "defaults": {"target_shard_size": 200, "recall_queries": 60},
            "surfaces": {
                "home": {"index": "ivf-pq", "pq_bytes": 32},
                "search": {"index": "hnsw-sq8", "ef_search": "auto"},
            },
        }
    )
    root = tmp_path / "index"
    config = BuildIndexConfig(table_uri, str(root), list(surfaces.values()))
    summary = build_indexes(spark, config, progress=quiet)
    for name, kind in (("home", "ivf-pq"), ("search", "hnsw-sq8")):
        assert summary["surfaces"][name]["status"] == "published", summary["surfaces"][name]
        manifest = manifest_of(build_dir(root, name, current_build_id(root, name)))
        assert manifest["memory"]["types"] == [kind]
        for shard in manifest["shards"]:
            assert shard["train"]["sample"] == shard["vectors"] and "search" in shard
        index = load_published(root, name)
        pid = index.ids[0].ids[0]
        assert index.search(index.vector_of(pid), k=1)[0][0] == pid
    neighbours = NeighboursConfig(str(root), ("home",), str(tmp_path / "nb"), k=5)
    written = write_neighbours(spark, neighbours, progress=quiet)["surfaces"]["home"]
    rows = read_table(str(tmp_path / "nb" / "home")).to_pylist()
    assert written["status"] == "written" and len(rows) == written["products"] == 400
    assert all(len(r["neighbours"]) == 5 for r in rows)
    again = dataclasses.replace(config, incremental=True)
    rebuilt = build_indexes(spark, again, progress=quiet)["surfaces"]["home"]
    assert rebuilt["status"] == "published" and "rebuilt in full" in rebuilt["rebuilt_because"]
