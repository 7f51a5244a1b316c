"""The embedding job on real local Spark, writing real Delta tables."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable

from itemsage_core.contracts.catalog_contract import validate_catalog
from itemsage_core.embedding.batch_embedder import BatchEmbedder
from itemsage_core.embedding.embed_run import EmbedConfig
from itemsage_core.embedding.embeddings_table import EMBEDDING_SCHEMA, quarantine_uri, read_table
from itemsage_core.embedding.table_history import embed_runs
from itemsage_core.model.inference import device_for_task
from itemsage_core.storage.parquet_io import write_parquet_dataset
from jobs.crash_points import POINTS
from jobs.embed_catalog import embed_catalog

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir):
    return tiny_model_dir


def quiet(_):
    pass


def test_job_matches_the_in_process_encoder_and_reads_back(
    spark, tmp_path, small_world, small_world_dir, model_dir
):
    table_uri = str(tmp_path / "embeddings")
    summary = embed_catalog(
        spark,
        EmbedConfig(str(small_world_dir / "catalog"), str(model_dir), table_uri),
        progress=quiet,
    )
    assert summary["status"] == "committed" and summary["table_version"] == 0
    assert summary["rows_in"] == summary["embedded"] == 400 and summary["quarantined"] == 0
    table = DeltaTable(table_uri)
    assert table.version() == 0
    rows = read_table(table_uri).sort_by("product_id")
    assert rows.num_rows == 400 and rows.schema.names == EMBEDDING_SCHEMA.names
    embedder = BatchEmbedder.for_model(str(model_dir), summary["model_version"])
    catalog = small_world.catalog.sort_by("product_id")
    expected = embedder.vectors(catalog)
    got = np.stack(rows.column("embedding").to_numpy(zero_copy_only=False))
    assert rows.column("product_id").equals(catalog.column("product_id"))
    assert np.abs(got - expected).max() <= 1e-5
    assert set(rows.column("model_version").to_pylist()) == {summary["model_version"]}

    again = embed_catalog(
        spark,
        EmbedConfig(str(small_world_dir / "catalog"), str(model_dir), table_uri),
        progress=quiet,
    )
    assert again["status"] == "already_committed" and again["table_version"] == 0
    assert DeltaTable(table_uri).version() == 0
    history = DeltaTable(table_uri).history()
    assert history[0]["itemsage_run_id"] == summary["run_id"]


def test_bad_rows_are_quarantined_and_counts_add_up(spark, tmp_path, small_world, model_dir):
    catalog = small_world.catalog.slice(0, 50)
    ids = catalog.column("product_id").to_pylist()
    ids[1] = ids[0]  # a duplicate id: both copies are rejected
    titles = catalog.column("title").to_pylist()
    titles[2] = "  "  # a blank title
    bad = catalog.set_column(0, "product_id", pa.array(ids)).set_column(
        1, "title", pa.array(titles)
    )
    write_parquet_dataset(bad, tmp_path / "catalog")
    table_uri = str(tmp_path / "embeddings")
    summary = embed_catalog(
        spark, EmbedConfig(str(tmp_path / "catalog"), str(model_dir), table_uri), progress=quiet
    )
    expected = validate_catalog(bad)
    assert summary["embedded"] == expected.valid.num_rows == 47
    assert summary["quarantined"] == 3 and summary["counts_add_up"]
    quarantine = read_table(quarantine_uri(table_uri))
    assert sorted(quarantine.column("product_id").to_pylist()) == sorted([ids[0], ids[0], ids[2]])
    reasons = quarantine.column("reason").to_pylist()
    assert sum("duplicate_product_id" in r for r in reasons) == 2
    assert sum("missing_title" in r for r in reasons) == 1
    assert all('"title"' in raw for raw in quarantine.column("raw_json").to_pylist())
    assert set(quarantine.column("run_id").to_pylist()) == {summary["run_id"]}
    embedded = read_table(table_uri)
    assert not set(embedded.column("product_id").to_pylist()) & {ids[0], ids[2]}
    assert pc.all(pc.equal(pc.list_value_length(embedded.column("embedding")), 256)).as_py()


def test_device_choice():
    assert device_for_task([], cuda_available=False) == "cpu"
    assert device_for_task(["1"], cuda_available=False) == "cpu"
    assert device_for_task(["1"], cuda_available=True) == "cuda:1"
    assert device_for_task([], cuda_available=True) == "cuda"


def test_incremental_refresh_encodes_only_what_changed(spark, tmp_path, small_world, model_dir):
    first = small_world.catalog.slice(0, 120)
    write_parquet_dataset(first, tmp_path / "v1")
    table_uri = str(tmp_path / "embeddings")
    base = embed_catalog(
        spark, EmbedConfig(str(tmp_path / "v1"), str(model_dir), table_uri), progress=quiet
    )

    titles = first.column("title").to_pylist()
    for i in (0, 1, 2):
        titles[i] += " (new edition)"
    ids = first.column("product_id").to_pylist()
    edited = first.set_column(1, "title", pa.array(titles))
    kept = edited.slice(0, 115)  # the last 5 products leave the catalog
    added = small_world.catalog.slice(200, 4)  # 4 products join it
    second = pa.concat_tables([kept, added])
    write_parquet_dataset(second, tmp_path / "v2")
    lines = []
    summary = embed_catalog(
        spark,
        EmbedConfig(str(tmp_path / "v2"), str(model_dir), table_uri, incremental=True),
        progress=lines.append,
    )
    assert summary["incremental"] == {
        "read_version": 0,
        "new": 4,
        "changed": 3,
        "unchanged": 112,
        "removed": 5,
    }
    assert summary["embedded"] == 7 and summary["carried_over"] == 112
    assert summary["counts_add_up"] and summary["table_version"] == 1
    # The rate is over the embedding stage's seconds, not the run's (start-up, reading, commit).
    seconds = summary["seconds"]
    assert list(seconds) == ["read_s", "embed_s", "carry_s", "count_s", "commit_s", "total_s"]
    assert summary["embedded_per_s"] == pytest.approx(7 / seconds["embed_s"])
    assert 0 < seconds["embed_s"] < seconds["total_s"]
    stages = sum(v for k, v in seconds.items() if k != "total_s")
    assert stages <= seconds["total_s"] + 1e-6
    assert "products_per_s" not in summary
    assert "rows/s over the" in lines[-1] and "embedding stage" in lines[-1]
    recorded = embed_runs(table_uri)
    assert [r["embedded_per_s"] for r in recorded] == [
        pytest.approx(base["embedded_per_s"]),
        pytest.approx(summary["embedded_per_s"]),
    ]
    vocab = BatchEmbedder.for_model(str(model_dir), summary["model_version"]).checkpoint.vocab
    encoded = vocab.encode(pa.concat_tables([edited.slice(0, 3), added])).coverage
    # Only the re-encoded rows count: the carried-over ones are not encoded again.
    assert summary["vocab_coverage"]["words"] == sum(c["unigram"][1] for c in encoded.values())

    rows = read_table(table_uri).sort_by("product_id")
    assert rows.num_rows == 119
    assert set(rows.column("product_id").to_pylist()) == set(
        second.column("product_id").to_pylist()
    )
    run_of = dict(zip(rows.column("product_id").to_pylist(), rows.column("run_id").to_pylist()))
    assert {run_of[i] for i in ids[:3]} == {summary["run_id"]}
    assert {run_of[i] for i in ids[3:115]} == {base["run_id"]}
    embedder = BatchEmbedder.for_model(str(model_dir), summary["model_version"])
    expected = embedder.vectors(second.sort_by("product_id"))
    got = np.stack(rows.column("embedding").to_numpy(zero_copy_only=False))
    assert np.abs(got - expected).max() <= 1e-5

    again = embed_catalog(
        spark,
        EmbedConfig(str(tmp_path / "v2"), str(model_dir), table_uri, incremental=True),
        progress=quiet,
    )
    assert again["status"] == "already_committed" and DeltaTable(table_uri).version() == 1


def test_a_killed_run_leaves_the_previous_version_and_a_rerun_completes(
    tmp_path, small_world, tiny_model_dir
):
    first = small_world.catalog.slice(0, 60)
    write_parquet_dataset(first, tmp_path / "v1")
    bad = first.set_column(1, "title", pa.array([None] + first.column("title").to_pylist()[1:]))
    write_parquet_dataset(bad, tmp_path / "v2")
    table_uri = str(tmp_path / "embeddings")

    def embed(catalog, crash=None):
        env = {k: v for k, v in os.environ.items() if k != "ITEMSAGE_CRASH_AT"}
        if crash:
            env["ITEMSAGE_CRASH_AT"] = crash
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "itemsage_cli.main",
                "embed",
                "--catalog",
                str(catalog),
                "--model",
                str(tiny_model_dir),
                "--table",
                table_uri,
                "--master",
                "local[1]",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    assert embed(tmp_path / "v1").returncode == 0
    before = read_table(table_uri).sort_by("product_id")
    for point in POINTS:  # in the order the job reaches them
        killed = embed(tmp_path / "v2", crash=point)
        assert killed.returncode == -signal.SIGKILL, (point, killed.stderr[-2000:])
        table = DeltaTable(table_uri)
        assert table.version() == 0, point
        assert read_table(table_uri).sort_by("product_id").equals(before), point
    # The quarantine commit precedes the main one; a rerun does not repeat it.
    assert read_table(quarantine_uri(table_uri)).num_rows == 1
    rerun = embed(tmp_path / "v2")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert DeltaTable(table_uri).version() == 1
    assert read_table(table_uri).num_rows == 59
    assert read_table(quarantine_uri(table_uri)).num_rows == 1


def test_failed_conversions_are_counted_and_their_rows_quarantined(
    spark, tmp_path, small_world, model_dir
):
    """type = "double" used to turn '£3.42' into null without a word; parse = "number" reads it,
    and what still fails is counted (full and incremental runs) and quarantined or nulled."""
    from itemsage_core.contracts.column_mapping import parse_mapping

    catalog = small_world.catalog.slice(0, 40)
    catalog = catalog.append_column(
        "price_text", pa.array(["£3.42", "abc", "£6.99 - £10.49", "1,040"] * 10)
    ).append_column("rating_text", pa.array(["4.5", "n/a"] * 20))
    write_parquet_dataset(catalog, tmp_path / "catalog")
    mapping = parse_mapping(
        {
            "extras": {
                "price": {"from": "price_text", "parse": "number"},
                "rating": {"from": "rating_text", "type": "double", "on_error": "null"},
            }
        }
    )
    table_uri = str(tmp_path / "embeddings")
    expected = {
        "price": {"values": 40, "failed": 10, "examples": ["abc"], "on_error": "reject"},
        "rating": {"values": 40, "failed": 20, "examples": ["n/a"], "on_error": "null"},
    }
    messages = []
    summary = embed_catalog(
        spark,
        EmbedConfig(str(tmp_path / "catalog"), str(model_dir), table_uri, mapping),
        progress=messages.append,
    )
    assert summary["conversions"] == expected
    assert (summary["embedded"], summary["quarantined"]) == (30, 10)
    reasons = read_table(quarantine_uri(table_uri)).column("reason")
    assert set(reasons.to_pylist()) == {"unparsable_extra: price 'abc' is not a double"}
    assert (
        "extra 'price': 10 of 40 values could not be converted, rows rejected "
        '(on_error = "reject"), e.g. "abc"'
    ) in messages
    again = embed_catalog(
        spark,
        EmbedConfig(
            str(tmp_path / "catalog"), str(model_dir), table_uri, mapping, incremental=True
        ),
        progress=quiet,
    )
    assert again["incremental"]["unchanged"] == 30 and again["conversions"] == expected


def test_flipkart_embeds_text_only_through_its_mapping(
    spark, tmp_path, flipkart_path, tiny_model_dir
):
    from itemsage_core.contracts.column_mapping import load_mapping

    table_uri = str(tmp_path / "flipkart")
    summary = embed_catalog(
        spark,
        EmbedConfig(
            str(flipkart_path),
            str(tiny_model_dir),
            table_uri,
            load_mapping("conf/mappings/flipkart.toml"),
        ),
        progress=quiet,
    )
    assert summary["rows_in"] == 20000
    assert summary["embedded"] == 19996 and summary["quarantined"] == 4
    rows = read_table(table_uri)
    assert rows.num_rows == 19996
    vectors = np.stack(rows.column("embedding").to_numpy(zero_copy_only=False))
    assert np.isfinite(vectors).all() and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_spark_delta_writer_needs_the_connector(spark, tmp_path, small_world_dir, tiny_model_dir):
    from itemsage_core.errors import ItemSageError

    table_uri = str(tmp_path / "embeddings")
    with pytest.raises(ItemSageError, match="needs Delta's Spark connector"):
        embed_catalog(
            spark,
            EmbedConfig(
                str(small_world_dir / "catalog"),
                str(tiny_model_dir),
                table_uri,
                writer="spark-delta",
            ),
            progress=quiet,
        )
    assert not os.path.exists(table_uri)


def test_quarantined_rows_are_strict_json_even_with_nan():
    import datetime as dt
    import json

    from itemsage_core.contracts.catalog_contract import conform_catalog
    from itemsage_core.embedding.batch_embedder import quarantine_rows

    table = conform_catalog(
        pa.table(
            {
                "product_id": ["a"],
                "title": ["t"],
                "image_embeddings": pa.array(
                    [[[float("nan"), float("-inf"), 1.0]]], pa.list_(pa.list_(pa.float32()))
                ),
            }
        )
    )
    rows = quarantine_rows(
        table,
        pa.array(["image_not_finite: x"]),
        "r1",
        dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    )

    def refuse(constant):
        raise ValueError(constant)

    raw = json.loads(rows.column("raw_json")[0].as_py(), parse_constant=refuse)
    assert raw["image_embeddings"] == [["NaN", "-Infinity", 1.0]]
