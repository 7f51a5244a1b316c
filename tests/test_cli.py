"""The `itemsage` CLI: help everywhere, clear one-line errors, generate and validate."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from itemsage_cli.main import cli

COMMANDS = ["generate", "validate", "train", "evaluate", "demo"]


@pytest.mark.parametrize("command", [[], *[[c] for c in COMMANDS]])
def test_help_on_every_command(command):
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output
    if not command:
        for name in COMMANDS:
            assert name in result.output


def test_generate_writes_catalog_and_engagements(tmp_path):
    result = CliRunner().invoke(cli, ["generate", "--out", str(tmp_path), "--products", "300",
                                      "--seed", "3"])
    assert result.exit_code == 0, result.output
    catalog = pq.read_table(tmp_path / "catalog")
    engagements = pq.read_table(tmp_path / "engagements")
    assert catalog.num_rows == 300 and engagements.num_rows == 1500
    assert json.loads((tmp_path / "world.json").read_text())["config"]["seed"] == 3


def test_user_errors_are_one_line_on_stderr_without_traceback(tmp_path):
    """A real subprocess, as a user runs it."""
    bad = subprocess.run([sys.executable, "-m", "itemsage_cli.main", "validate", "--catalog",
                          str(tmp_path / "missing"), "--mapping", str(tmp_path / "m.toml")],
                         capture_output=True, text=True)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [f"error: mapping file not found: {tmp_path}/m.toml"]
    assert "Traceback" not in bad.stderr
    usage = subprocess.run([sys.executable, "-m", "itemsage_cli.main", "generate"],
                           capture_output=True, text=True)
    assert usage.returncode == 2 and "Missing option '--out'" in usage.stderr


@pytest.mark.spark
def test_validate_json(spark, small_world_dir):
    result = CliRunner().invoke(cli, [
        "validate", "--catalog", str(small_world_dir / "catalog"),
        "--engagements", str(small_world_dir / "engagements"), "--json"])
    assert result.exit_code == 0, result.output
    reports = json.loads(result.stdout)
    assert reports["catalog"]["rows"] == 400 and reports["catalog"]["rejected"] == 0
    assert reports["engagements"]["rows"] == 2000 and reports["engagements"]["valid"] == 2000


@pytest.mark.spark
def test_validate_schema_error_exits_1(spark, tmp_path):
    import pyarrow as pa
    pq.write_table(pa.table({"product_id": [1], "title": ["t"]}), tmp_path / "c.parquet")
    result = CliRunner().invoke(cli, ["validate", "--catalog", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: catalog column 'product_id' must be string, found int64 "
        "(schema-level: affects all rows)")


TINY_TRAIN = ["--d-model", "32", "--ffn-dim", "64", "--hash-buckets", "2000", "--epochs", "2",
              "--batch-size", "64", "--random-negatives", "32"]


def test_train_then_evaluate_on_a_generated_world(tmp_path, small_world_dir):
    world = ["--catalog", str(small_world_dir / "catalog"),
             "--engagements", str(small_world_dir / "engagements")]
    trained = CliRunner().invoke(cli, ["train", *world, "--out", str(tmp_path / "model"),
                                       *TINY_TRAIN])
    assert trained.exit_code == 0, trained.output
    assert "epoch 2/2" in trained.output and "examples/s" in trained.output
    assert "recall@10" in trained.output and "model itemsage-" in trained.output
    evaluated = CliRunner().invoke(cli, ["evaluate", "--model", str(tmp_path / "model"), *world,
                                         "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.stdout)
    manifest = json.loads((tmp_path / "model" / "checkpoint.json").read_text())
    assert report["model_version"] == manifest["model_version"]
    assert report["overall"] == manifest["summary"]["heldout"]["overall"]
    assert set(report["per_task"]) <= {f"{s}/{e}" for s in ("home", "closeup", "search")
                                       for e in ("click", "save", "add_to_cart", "checkout")}
    assert 0 <= report["overall"] <= 1


def test_train_rejects_an_unknown_task(tmp_path, small_world_dir):
    result = CliRunner().invoke(cli, [
        "train", "--catalog", str(small_world_dir / "catalog"), "--engagements",
        str(small_world_dir / "engagements"), "--out", str(tmp_path / "m"), "--tasks", "buy"])
    assert result.exit_code == 1
    assert "unknown task 'buy'" in result.output


def test_evaluate_refuses_a_directory_that_is_not_a_model(tmp_path, small_world_dir):
    result = CliRunner().invoke(cli, [
        "evaluate", "--model", str(tmp_path), "--catalog", str(small_world_dir / "catalog"),
        "--engagements", str(small_world_dir / "engagements")])
    assert result.exit_code == 1
    assert "is not a model checkpoint" in result.output
