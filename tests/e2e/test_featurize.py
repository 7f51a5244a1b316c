"""`itemsage featurize` (jobs/featurize_job.py) on local Spark with all-MiniLM-L6-v2: vectors as
the in-process encoder gives them, OUT/mapping.toml, quarantine, incremental reruns, and what a
broken model or a failed run leaves."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from itemsage_core.contracts.catalog_check import check_batch
from itemsage_core.contracts.catalog_contract import repeated_ids_of
from itemsage_core.contracts.column_mapping import load_mapping
from itemsage_core.embedding.featurize_run import (
    MANIFEST,
    MAPPING_FILE,
    QUARANTINE_DIR,
    SOURCE_HASH,
    TEXT_EMBEDDING,
    FeaturizeConfig,
    mapped_columns,
)
from itemsage_core.errors import ItemSageError
from itemsage_core.features import sentence_text
from itemsage_core.features.sentence_text import (
    SentenceEncoder,
    check_features,
    default_features,
    fetch_model,
    model_files,
    model_identity,
    product_text,
    text_hashes,
)
from itemsage_core.storage.parquet_io import parquet_files, read_parquet

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

pytest.importorskip("sentence_transformers", reason="sentence-transformers is in the dev extra")

FEATURES = ("title", "brand")
ROWS = 200
NO_REPEATS = repeated_ids_of(pa.array([], pa.string()))


def _run(spark, **options) -> dict:
    from jobs.featurize_job import featurize

    return featurize(spark, FeaturizeConfig(**options), progress=lambda _: None)


def _with(table: pa.Table, column: str, values: list) -> pa.Table:
    where = table.column_names.index(column)
    return table.set_column(where, column, pa.array(values, table.schema.field(column).type))


def _snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def encoder(minilm_dir) -> SentenceEncoder:
    return SentenceEncoder.load(minilm_dir)


@pytest.fixture(scope="module")
def world_catalog(tmp_path_factory, small_world) -> pa.Table:
    """200 synthetic products; rows 0 and 1 share an id, row 5's title is blank."""
    table = small_world.catalog.slice(0, ROWS)
    ids = table.column("product_id").to_pylist()
    ids[1] = ids[0]
    titles = table.column("title").to_pylist()
    titles[5] = "  "
    return _with(_with(table, "product_id", ids), "title", titles)


@pytest.fixture(scope="module")
def first_run(spark, tmp_path_factory, world_catalog, minilm_dir):
    root = tmp_path_factory.mktemp("featurize")
    catalog = root / "catalog.parquet"
    pq.write_table(world_catalog, catalog)
    out = root / "out"
    summary = _run(
        spark, catalog=str(catalog), text_model=str(minilm_dir), out=str(out), features=FEATURES
    )
    return root, out, summary


@pytest.fixture(scope="module")
def changed_catalog(first_run, world_catalog) -> Path:
    """The catalog of first_run with row 10's title changed."""
    titles = world_catalog.column("title").to_pylist()
    titles[10] = "a brand new title for product ten"
    changed = first_run[0] / "changed"
    changed.mkdir()
    pq.write_table(_with(world_catalog, "title", titles), changed / "catalog.parquet")
    return changed


def _expected(encoder, rows: pa.Table) -> np.ndarray:
    """The in-process encoder's vectors of raw catalog rows (no mapping)."""
    table, _ = check_batch(rows.drop_columns([TEXT_EMBEDDING, SOURCE_HASH]), None, 256, NO_REPEATS)
    return encoder.encode(product_text(table, FEATURES))


def test_vectors_match_the_in_process_encoder(first_run, encoder, world_catalog, minilm_dir):
    _, out, summary = first_run
    assert summary["rows_in"] == ROWS and summary["counts_add_up"]
    assert (summary["featurized"], summary["encoded"], summary["reused"]) == (197, 197, 0)
    rows = read_parquet(out)
    assert rows.num_rows == 197
    assert rows.column_names == [*world_catalog.column_names, TEXT_EMBEDDING, SOURCE_HASH]
    assert rows.schema.field(TEXT_EMBEDDING).type == pa.list_(pa.float32())
    got = np.asarray(rows.column(TEXT_EMBEDDING).combine_chunks().flatten()).reshape(-1, 384)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(got, _expected(encoder, rows), atol=1e-5)
    table, _ = check_batch(rows.drop_columns([TEXT_EMBEDDING, SOURCE_HASH]), None, 256, NO_REPEATS)
    assert (
        rows.column(SOURCE_HASH).to_pylist()
        == text_hashes(product_text(table, FEATURES)).to_pylist()
    )
    described = json.loads((out / MANIFEST).read_text())
    assert described["model"]["sha256"] == model_identity(model_files(minilm_dir))
    assert described["model"]["files"]["model.safetensors"].startswith("53aa51172d14")
    assert (described["features"], described["dim"]) == (list(FEATURES), 384)
    assert parquet_files(out) == [str(out / f) for f in described["files"]]


def test_quarantine_holds_the_bad_rows_with_reasons(first_run, world_catalog):
    _, out, summary = first_run
    ids = world_catalog.column("product_id").to_pylist()
    assert summary["quarantined"] == 3
    assert summary["quarantined_by_rule"] == {"duplicate_product_id": 2, "missing_title": 1}
    bad = pq.read_table(out / QUARANTINE_DIR).sort_by("reason")
    assert bad.column("product_id").to_pylist() == [ids[0], ids[0], ids[5]]
    assert [r.split(":")[0] for r in bad.column("reason").to_pylist()] == [
        "duplicate_product_id",
        "duplicate_product_id",
        "missing_title",
    ]


def test_mapping_file_without_an_input_mapping_is_the_dense_section(first_run):
    _, out, _ = first_run
    text = (out / MAPPING_FILE).read_text()
    dense = {"text_embedding": {"from": TEXT_EMBEDDING, "dim": 384}}
    assert tomllib.loads(text) == {"dense": dense}
    load_mapping(out / MAPPING_FILE)  # the column mapping's parser reads it


def test_rerun_reuses_every_vector_and_a_changed_title_is_encoded(
    spark, first_run, changed_catalog, world_catalog, minilm_dir, encoder
):
    root, out, _ = first_run
    before = read_parquet(out)
    again = _run(
        spark,
        catalog=str(root / "catalog.parquet"),
        text_model=str(minilm_dir),
        out=str(out),
        features=("brand", "title"),  # the same features, written in another order
    )
    assert (again["encoded"], again["reused"], again["previous"]) == (
        0,
        197,
        "reused by text hash",
    )
    assert read_parquet(out).equals(before)

    third = _run(
        spark,
        catalog=str(changed_catalog),
        text_model=str(minilm_dir),
        out=str(out),
        features=FEATURES,
    )
    assert (third["encoded"], third["reused"]) == (1, 196)
    rows = read_parquet(out)
    ids = rows.column("product_id").to_pylist()
    row = ids.index(world_catalog.column("product_id")[10].as_py())
    got = np.asarray(rows.column(TEXT_EMBEDDING)[row].as_py(), np.float32)
    np.testing.assert_allclose(got, _expected(encoder, rows.slice(row, 1))[0], atol=1e-5)


def test_a_failure_before_the_move_leaves_the_previous_out(
    spark, first_run, changed_catalog, minilm_dir, monkeypatch
):
    import jobs.featurize_job as job

    root, out, _ = first_run
    before = _snapshot(out)

    def broken(*_):
        raise OSError("disk full")

    monkeypatch.setattr(job, "publish", broken)
    with pytest.raises(OSError, match="disk full"):  # after the tasks wrote every file
        _run(spark, catalog=str(changed_catalog), text_model=str(minilm_dir), out=str(out))
    assert _snapshot(out) == before
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".out.")] == []


def test_a_damaged_model_fails_in_one_line_and_leaves_out(spark, first_run, minilm_dir, tmp_path):
    root, out, _ = first_run
    before = _snapshot(out)
    damaged = tmp_path / "damaged"
    shutil.copytree(minilm_dir, damaged, ignore=shutil.ignore_patterns("model.safetensors"))
    (damaged / "model.safetensors").write_bytes(
        (minilm_dir / "model.safetensors").read_bytes()[:4096]
    )
    with pytest.raises(ItemSageError) as failed:  # fails in the Spark task that loads it
        _run(spark, catalog=str(root / "catalog.parquet"), text_model=str(damaged), out=str(out))
    message = str(failed.value)
    assert message.startswith("featurize job failed: ") and "\n" not in message
    assert f"{out} was left as it was" in message
    assert _snapshot(out) == before
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".out.")] == []


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda d: shutil.rmtree(d), "is not a directory"),
        (lambda d: (d / "modules.json").unlink(), "has no modules.json"),
        (lambda d: (d / "pytorch_model.bin").write_bytes(b"x"), "pickle-like files are refused"),
        (lambda d: (d / "model.safetensors").unlink(), "no .safetensors weights"),
    ],
)
def test_a_model_folder_that_is_not_usable_is_one_error_line(
    spark, first_run, minilm_dir, tmp_path, damage, words
):
    root, out, _ = first_run
    folder = tmp_path / "model"
    shutil.copytree(minilm_dir, folder, ignore=shutil.ignore_patterns("model.safetensors"))
    (folder / "model.safetensors").write_bytes(b"weights")
    damage(folder)
    from itemsage_cli.main import cli

    result = CliRunner().invoke(
        cli,
        [
            "featurize",
            "--catalog",
            str(root / "catalog.parquet"),
            "--text-model",
            str(folder),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: text model ")
    assert words in result.stderr


def test_without_sentence_transformers_the_error_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    monkeypatch.setattr(sentence_text, "_LOADED", {})
    (tmp_path / "modules.json").write_text("[]")
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(ItemSageError, match=r"pip install 'itemsage-spark\[text\]'"):
        SentenceEncoder.load(tmp_path)


def test_feature_names_are_checked_and_put_in_contract_order():
    assert check_features(["brand", "title", "brand"]) == ["title", "brand"]
    with pytest.raises(ItemSageError, match="nearest: title"):
        check_features(["titel"])
    assert default_features(["product_id", "product_type", "brand", "title", "price"]) == [
        "title",
        "brand",
        "product_type",
    ]


def test_flipkart_through_the_cli_with_its_mapping(
    spark, flipkart_path, flipkart_mapping, minilm_dir, encoder, tmp_path
):
    catalog = tmp_path / "flipkart.parquet"
    pq.write_table(pq.read_table(flipkart_path).slice(0, ROWS), catalog)
    out = tmp_path / "out"
    from itemsage_cli.main import cli

    args = ["featurize", "--catalog", str(catalog), "--mapping", str(flipkart_mapping)]
    args += ["--text-model", str(minilm_dir), "--out", str(out), "--features", "title,brand"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["features"] == ["title", "brand"] and summary["featurized"] == ROWS
    text = (out / MAPPING_FILE).read_text()
    assert text.startswith(flipkart_mapping.read_text())
    doc = tomllib.loads(text)
    assert doc["dense"] == {"text_embedding": {"from": TEXT_EMBEDDING, "dim": 384}}
    assert doc["features"]["title"] == {"from": "product_name"}
    load_mapping(out / MAPPING_FILE)
    rows = read_parquet(out)
    assert "pid" in rows.column_names and "product_id" not in rows.column_names  # raw columns
    mapping = load_mapping(flipkart_mapping)
    assert default_features(mapped_columns(pq.read_schema(catalog), mapping)) == [
        "title",
        "brand",
        "product_type",
    ]
    table, reasons = check_batch(
        rows.drop_columns([TEXT_EMBEDDING, SOURCE_HASH]), mapping, 256, NO_REPEATS
    )
    assert pc.all(pc.is_null(reasons)).as_py()
    got = np.asarray(rows.column(TEXT_EMBEDDING).combine_chunks().flatten()).reshape(-1, 384)
    np.testing.assert_allclose(got, encoder.encode(product_text(table, FEATURES)), atol=1e-5)


def test_a_model_uri_is_fetched_once_into_the_cache(tmp_path):
    folder = tmp_path / "model"
    (folder / "1_Pooling").mkdir(parents=True)
    (folder / "modules.json").write_text("[]")
    (folder / "1_Pooling" / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights")
    identity = model_identity(model_files(folder))
    cache = tmp_path / "cache"
    fetched = fetch_model(folder.as_uri(), cache_dir=cache)  # file:// goes through the Store
    assert fetched == cache / identity and model_files(fetched) == model_files(folder)
    (folder / "model.safetensors").write_bytes(b"other weights")
    assert fetch_model(folder.as_uri(), identity, cache) == fetched  # cached, not fetched again
    with pytest.raises(ItemSageError, match="changed during the run"):
        fetch_model(folder.as_uri(), "0" * 64, cache)
    assert sorted(p.name for p in cache.iterdir()) == [identity]


def test_help():
    from itemsage_cli.main import cli

    result = CliRunner().invoke(cli, ["featurize", "--help"])
    assert result.exit_code == 0 and "--text-model" in result.output
