"""Catalogs, engagement logs and models on an object store: a real S3 API (moto's server on
127.0.0.1), read by pyarrow in the tasks (no Hadoop connector) and written through the Store; the
whole flow with no local path but the command line."""

from __future__ import annotations

import json
import os

import pytest
import torch
from test_index_object_store import SURFACES, itemsage, s3_env

from itemsage_core.errors import ItemSageError
from itemsage_core.model.checkpoint import (
    load_checkpoint,
    read_checkpoint_manifest,
    save_checkpoint,
)
from itemsage_core.model.model_store import FILES_KEY
from itemsage_core.storage.parquet_io import parquet_files, read_parquet
from itemsage_core.storage.store import Store
from jobs.parquet_frame import READER_CONF, arrow_reads, parquet_frame

pytest.importorskip("moto.server", reason="moto[server] is in the dev extra")
WORLD = "s3://lake/world"
TINY = (
    "--batch-size", "32", "--random-negatives", "16", "--d-model", "32", "--ffn-dim", "64",
    "--hash-buckets", "2000", "--vocab", "2000,2000,500",
)  # fmt: skip


@pytest.fixture
def s3(s3_endpoint, monkeypatch):
    """The S3 environment set for this process and tests' subprocesses."""
    for name, value in s3_env(s3_endpoint).items():
        monkeypatch.setenv(name, value)
    return s3_endpoint


def upload_world(world_dir) -> None:
    """The small world's catalog and engagement log, copied to s3://lake/world/."""
    store = Store(WORLD)
    for part in ("catalog", "engagements"):
        for file in sorted((world_dir / part).glob("*.parquet")):
            store.write_bytes(f"{part}/{file.name}", file.read_bytes())


def test_parquet_on_s3_is_listed_and_read_like_the_same_files_on_disk(s3, small_world_dir):
    upload_world(small_world_dir)
    Store(WORLD).write_bytes("catalog/_SUCCESS", b"")
    Store(WORLD).write_bytes("catalog/.hidden/x.parquet", b"not parquet")
    local = parquet_files(small_world_dir / "catalog")
    remote = parquet_files(f"{WORLD}/catalog")
    assert [f.rsplit("/", 1)[-1] for f in remote] == [os.path.basename(f) for f in local]
    assert all(f.startswith(f"{WORLD}/catalog/part-") for f in remote)
    assert parquet_files(f"{WORLD}/catalog/part-0000[01].parquet") == remote[:2]
    assert read_parquet(f"{WORLD}/catalog").equals(read_parquet(small_world_dir / "catalog"))
    with pytest.raises(ItemSageError, match="no such file or directory: s3://lake/nothing"):
        parquet_files("s3://lake/nothing")


@pytest.mark.spark
def test_train_embed_evaluate_index_and_query_with_everything_on_s3(s3, small_world_dir, tmp_path):
    upload_world(small_world_dir)
    model, table, index = "s3://lake/models/m1", "s3://lake/embeddings", "s3://lake/indexes"
    work = tmp_path / "cwd"
    work.mkdir()
    (tmp_path / "surfaces.toml").write_text(SURFACES)
    env = {**os.environ, "ITEMSAGE_CACHE_DIR": str(tmp_path / "cache")}
    outputs = []

    def run(*args: str) -> dict | list:
        done = itemsage(*args, env=env, cwd=work)
        outputs.append(done.stdout + done.stderr)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        return done

    catalog, log = f"{WORLD}/catalog", f"{WORLD}/engagements"
    trained = run("train", "--catalog", catalog, "--engagements", log, "--out", model, *TINY)
    version = read_checkpoint_manifest(model)["model_version"]
    assert f"model {version} written to {model}" in trained.stdout
    run("validate", "--catalog", catalog, "--master", "local[1]")
    run(
        "embed", "--catalog", catalog, "--model", model, "--table", table, "--master", "local[1]",
        "--summary-json", str(tmp_path / "embed.json"),
    )  # fmt: skip
    outputs.append((tmp_path / "embed.json").read_text())
    evaluated = json.loads(
        run(
            "evaluate", "--model", model, "--catalog", catalog, "--engagements", log, "--json"
        ).stdout
    )
    assert evaluated["model_version"] == version
    by_type = run(
        "evaluate-catalog", "--model", model, "--catalog", catalog,
        "--label-column", "product_type", "--queries", "100", "--json",
    )  # fmt: skip
    assert json.loads(by_type.stdout)["model_version"] == version
    run(
        "build-index", "--table", table, "--surfaces", str(tmp_path / "surfaces.toml"),
        "--out", index, "--master", "local[1]", "--catalog", catalog,
    )  # fmt: skip
    run(
        "neighbours", "--index", index, "--surface", "home", "--out", f"{index}-neighbours",
        "-k", "5", "--catalog", catalog, "--master", "local[1]",
    )  # fmt: skip
    product = read_parquet(catalog, ["product_id"]).column(0)[3].as_py()
    answer = run(
        "query", "--index", index, "--surface", "home", "--product-id", product, "-k", "5",
        "--catalog", catalog, "--show", "title", "--json",
    )  # fmt: skip
    rows = json.loads(answer.stdout)
    assert len(rows) == 5 and all(row["title"] for row in rows)
    assert list(work.iterdir()) == []  # nothing written to the working directory
    assert not any("s3cr3t-value" in text for text in outputs)
    manifest = Store(model).read_bytes("checkpoint.json")
    assert b"s3cr3t" not in manifest and json.loads(manifest)[FILES_KEY] == f"files/{version}"


def test_a_model_on_s3_is_published_whole_fetched_once_and_checked(
    s3, tiny_model_dir, small_world_dir, tmp_path, monkeypatch
):
    model, store = "s3://lake/models/m2", Store("s3://lake/models/m2")
    trained = load_checkpoint(tiny_model_dir)

    def save(n: int) -> str:
        with torch.no_grad():
            next(trained.model.parameters()).add_(0.01)  # another model, another version
        return save_checkpoint(model, trained.model, trained.vocab, trained.config, {"n": n})

    versions = [save(n) for n in range(3)]
    assert len(set(versions)) == 3
    assert store.names(FILES_KEY) == sorted(versions[1:])  # the current one and the one before
    monkeypatch.setenv("ITEMSAGE_CACHE_DIR", str(tmp_path / "cache"))
    loaded = load_checkpoint(model)
    assert loaded.model_version == versions[2]
    assert loaded.path == tmp_path / "cache" / "checkpoints" / versions[2]
    assert read_checkpoint_manifest(model)["summary"] == {"n": 2}
    # A damaged object: the verified cached copy still answers; a machine without one is told.
    weights = f"{FILES_KEY}/{versions[2]}/model.safetensors"
    store.write_bytes(weights, store.read_bytes(weights)[:-8] + b"\0" * 8)
    assert load_checkpoint(model).model_version == versions[2]
    monkeypatch.setenv("ITEMSAGE_CACHE_DIR", str(tmp_path / "other-cache"))
    with pytest.raises(ItemSageError) as raised:
        load_checkpoint(model)
    assert str(raised.value) == (
        f"checkpoint {model}: model.safetensors does not match its sha256 in "
        "checkpoint.json (corrupted or edited)"
    )
    assert not list((tmp_path / "other-cache" / "checkpoints").iterdir())
    told = itemsage(
        "evaluate", "--model", model, "--catalog", str(small_world_dir / "catalog"),
        "--engagements", str(small_world_dir / "engagements"), env=dict(os.environ),
    )  # fmt: skip
    assert told.returncode == 1 and told.stderr.splitlines() == [f"error: {raised.value}"]
    Store("s3://lake/not-a-model").write_bytes("x.json", b"{}")
    with pytest.raises(ItemSageError, match="is not a model checkpoint; choose another --out"):
        save_checkpoint("s3://lake/not-a-model", trained.model, trained.vocab, {}, {})


@pytest.mark.spark
def test_object_stores_are_read_by_pyarrow_unless_the_session_asks_for_spark(spark):
    assert arrow_reads(spark, "s3://lake/catalog") and arrow_reads(spark, "gs://b/c")
    assert not arrow_reads(spark, "/data/catalog") and not arrow_reads(spark, "hdfs:///c")
    try:
        spark.conf.set(READER_CONF, "spark")
        assert not arrow_reads(spark, "s3://lake/catalog")
        spark.conf.set(READER_CONF, "hadoop")
        with pytest.raises(ItemSageError) as raised:
            parquet_frame(spark, "s3://lake/catalog")
        assert str(raised.value) == f"--conf {READER_CONF}=hadoop: use arrow or spark"
    finally:
        spark.conf.unset(READER_CONF)
