"""The `itemsage` CLI: help everywhere, clear one-line errors, generate and validate."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from itemsage_cli.main import cli

COMMANDS = ["generate", "validate", "train", "evaluate", "report", "demo"]


@pytest.mark.parametrize("command", [[], *[[c] for c in COMMANDS]])
def test_help_on_every_command(command):
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output
    if not command:
        for name in COMMANDS:
            assert name in result.output


def test_generate_writes_catalog_and_engagements(tmp_path):
    result = CliRunner().invoke(
        cli, ["generate", "--out", str(tmp_path), "--products", "300", "--seed", "3"]
    )
    assert result.exit_code == 0, result.output
    catalog = pq.read_table(tmp_path / "catalog")
    engagements = pq.read_table(tmp_path / "engagements")
    assert catalog.num_rows == 300 and engagements.num_rows == 1500
    assert json.loads((tmp_path / "world.json").read_text())["config"]["seed"] == 3


def test_user_errors_are_one_line_on_stderr_without_traceback(tmp_path):
    """A real subprocess, as a user runs it."""
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "itemsage_cli.main",
            "validate",
            "--catalog",
            str(tmp_path / "missing"),
            "--mapping",
            str(tmp_path / "m.toml"),
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [f"error: mapping file not found: {tmp_path}/m.toml"]
    assert "Traceback" not in bad.stderr
    usage = subprocess.run(
        [sys.executable, "-m", "itemsage_cli.main", "generate"], capture_output=True, text=True
    )
    assert usage.returncode == 2 and "Missing option '--out'" in usage.stderr


def test_report_without_a_published_surface_says_what_to_run(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "itemsage_cli.main", "report", "--index", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1 and not (tmp_path / "_report").exists()
    assert run.stderr.strip().splitlines() == [
        f"error: no published surface under {tmp_path}: run itemsage build-index"
    ]


def test_a_spark_analysis_error_is_one_line_unless_verbose(monkeypatch):
    import click
    from pyspark.errors import AnalysisException

    from itemsage_cli.main import ItemSageGroup

    @click.group(cls=ItemSageGroup)
    def group():
        pass

    @group.command()
    def analyse():
        raise AnalysisException("[UNRESOLVED_COLUMN] no column x.\nthe plan, line by line")

    # setenv first, so that the variable --verbose sets below is removed after the test
    monkeypatch.setenv("ITEMSAGE_SPARK_LOG_LEVEL", "ERROR")
    monkeypatch.delenv("ITEMSAGE_SPARK_LOG_LEVEL")
    quiet = CliRunner().invoke(group, ["analyse"])
    assert quiet.exit_code == 1 and quiet.stderr == "error: [UNRESOLVED_COLUMN] no column x.\n"
    assert CliRunner().invoke(cli, ["--verbose", "generate", "--help"]).exit_code == 0
    assert os.environ["ITEMSAGE_SPARK_LOG_LEVEL"] == "WARN"
    assert isinstance(CliRunner().invoke(group, ["analyse"]).exception, AnalysisException)


def test_validate_json(small_world_dir):
    result = CliRunner().invoke(
        cli,
        [
            "validate",
            "--catalog",
            str(small_world_dir / "catalog"),
            "--engagements",
            str(small_world_dir / "engagements"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    reports = json.loads(result.stdout)
    assert reports["catalog"]["rows"] == 400 and reports["catalog"]["rejected"] == 0
    assert reports["engagements"]["rows"] == 2000 and reports["engagements"]["valid"] == 2000


def test_validate_schema_error_exits_1(tmp_path):
    import pyarrow as pa

    pq.write_table(pa.table({"product_id": [1], "title": ["t"]}), tmp_path / "c.parquet")
    result = CliRunner().invoke(cli, ["validate", "--catalog", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'c.parquet'}: catalog column 'product_id' must be string, found "
        "int64 (schema-level: affects all rows)"
    )


@pytest.mark.parametrize("flags", [[], pytest.param(["--spark"], marks=pytest.mark.spark)])
def test_validate_counts_extra_values_that_do_not_convert(request, tmp_path, flags):
    """type = "double" on '£3.42' used to give nulls and "all valid"; parse = "number" reads it."""
    import pyarrow as pa

    if flags:
        request.getfixturevalue("spark")
    prices = ["£3.42", "£6.99 - £10.49", "1,040", "abc", "", None]
    (tmp_path / "c").mkdir()
    pq.write_table(
        pa.table({"product_id": list("abcdef"), "title": ["t"] * 6, "price_text": prices}),
        tmp_path / "c" / "part-0.parquet",
    )
    counts = {}
    for parse in ("", 'parse = "number"'):
        mapping = tmp_path / "m.toml"
        mapping.write_text(f'[extras.price]\nfrom = "price_text"\ntype = "double"\n{parse}\n')
        args = ["validate", "--catalog", str(tmp_path / "c"), "--mapping", str(mapping), *flags]
        result = CliRunner().invoke(cli, [*args, "--json"])
        assert result.exit_code == 0, result.output
        counts[parse] = json.loads(result.stdout)["catalog"]
        text = CliRunner().invoke(cli, args).stdout
    strict, parsed = counts[""], counts['parse = "number"']
    assert strict["conversions"]["price"] == {
        "values": 4,
        "failed": 4,
        "on_error": "reject",
        "examples": ["1,040", "abc", "£3.42"],
    }
    assert strict["rejected"] == 4 and strict["violations"] == [
        {"column": "extras", "rule": "unparsable_extra", "rows": 4}
    ]
    assert parsed["conversions"]["price"]["failed"] == 1 and parsed["rejected"] == 1
    assert "  extra 'price': 1 of 4 values could not be converted, rows rejected " in text


TINY_TRAIN = [
    "--d-model",
    "32",
    "--ffn-dim",
    "64",
    "--hash-buckets",
    "2000",
    "--epochs",
    "2",
    "--batch-size",
    "64",
    "--random-negatives",
    "32",
]


def test_train_then_evaluate_on_a_generated_world(tmp_path, small_world_dir):
    world = [
        "--catalog",
        str(small_world_dir / "catalog"),
        "--engagements",
        str(small_world_dir / "engagements"),
    ]
    trained = CliRunner().invoke(
        cli, ["train", *world, "--out", str(tmp_path / "model"), *TINY_TRAIN]
    )
    assert trained.exit_code == 0, trained.output
    assert "epoch 2/2" in trained.output and "examples/s" in trained.output
    assert "recall@10" in trained.output and "model itemsage-" in trained.output
    evaluated = CliRunner().invoke(
        cli, ["evaluate", "--model", str(tmp_path / "model"), *world, "--json"]
    )
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.stdout)
    manifest = json.loads((tmp_path / "model" / "checkpoint.json").read_text())
    assert report["model_version"] == manifest["model_version"]
    assert report["overall"] == manifest["summary"]["heldout"]["overall"]
    assert set(report["per_task"]) <= {
        f"{s}/{e}"
        for s in ("home", "closeup", "search")
        for e in ("click", "save", "add_to_cart", "checkout")
    }
    assert 0 <= report["overall"] <= 1


def test_train_rejects_an_unknown_task(tmp_path, small_world_dir):
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "--catalog",
            str(small_world_dir / "catalog"),
            "--engagements",
            str(small_world_dir / "engagements"),
            "--out",
            str(tmp_path / "m"),
            "--tasks",
            "buy",
        ],
    )
    assert result.exit_code == 1
    assert "unknown task 'buy'" in result.output


def test_evaluate_refuses_a_directory_that_is_not_a_model(tmp_path, small_world_dir):
    result = CliRunner().invoke(
        cli,
        [
            "evaluate",
            "--model",
            str(tmp_path),
            "--catalog",
            str(small_world_dir / "catalog"),
            "--engagements",
            str(small_world_dir / "engagements"),
        ],
    )
    assert result.exit_code == 1
    assert "is not a model checkpoint" in result.output


def test_train_reads_several_vocabulary_catalogs_and_says_so(
    tmp_path, small_world_dir, flipkart_path
):
    """Each --vocab-catalog is confirmed with its rows, and the tokens the extra catalogs added
    are counted in the progress lines and the checkpoint's summary."""
    world = [
        "--catalog",
        str(small_world_dir / "catalog"),
        "--engagements",
        str(small_world_dir / "engagements"),
    ]
    import pyarrow as pa

    pq.write_table(pq.read_table(flipkart_path).slice(0, 300), tmp_path / "a.parquet")
    pq.write_table(
        pa.table({"product_id": ["x1", "x2"], "title": ["zebra lamp", "zebra mug"]}),
        tmp_path / "b.parquet",
    )
    mapping = "conf/mappings/flipkart.toml"
    trained = CliRunner().invoke(
        cli,
        [
            "train",
            *world,
            "--out",
            str(tmp_path / "m"),
            *TINY_TRAIN,
            "--epochs",
            "1",
            "--vocab-catalog",
            str(tmp_path / "a.parquet"),
            "--vocab-mapping",
            mapping,
            "--vocab-catalog",
            str(tmp_path / "b.parquet"),
            "--vocab-mapping",
            mapping,
        ],
    )
    assert trained.exit_code == 1 and "source column(s)" in trained.output  # b has no 'pid'
    trained = CliRunner().invoke(
        cli,
        [
            "train",
            *world,
            "--out",
            str(tmp_path / "m"),
            *TINY_TRAIN,
            "--epochs",
            "1",
            "--vocab-catalog",
            str(tmp_path / "a.parquet"),
            "--vocab-catalog",
            str(tmp_path / "b.parquet"),
            "--vocab-mapping",
            mapping,
            "--vocab-mapping",
            mapping,
            "--vocab-mapping",
            mapping,
        ],
    )
    assert trained.exit_code == 1 and "--vocab-mapping given 3 times" in trained.output
    pq.write_table(
        pa.table(
            {
                "pid": ["x1", "x2"],
                "product_name": ["zebra lamp", "zebra mug"],
                "product_category_tree": ["a", "b"],
                "brand": [None, None],
                "uniq_id": ["1", "2"],
                "retail_price": ["1", "2"],
                "discounted_price": ["1", "2"],
                "is_FK_Advantage_product": ["TRUE", "FALSE"],
                "product_rating": ["1", "2"],
            }
        ),
        tmp_path / "b.parquet",
    )
    trained = CliRunner().invoke(
        cli,
        [
            "train",
            *world,
            "--out",
            str(tmp_path / "m"),
            *TINY_TRAIN,
            "--epochs",
            "1",
            "--vocab-catalog",
            str(tmp_path / "a.parquet"),
            "--vocab-catalog",
            str(tmp_path / "b.parquet"),
            "--vocab-mapping",
            mapping,
        ],
    )
    assert trained.exit_code == 0, trained.output
    assert f"{tmp_path / 'a.parquet'} (300 rows), {tmp_path / 'b.parquet'} (2 rows)" in (
        trained.output
    )
    summary = json.loads((tmp_path / "m" / "checkpoint.json").read_text())["summary"]["data"]
    assert summary["vocab_catalogs"] == {
        str(tmp_path / "a.parquet"): 300,
        str(tmp_path / "b.parquet"): 2,
    }
    assert 0 < summary["vocab_tokens_from_vocab_catalogs"] < summary["vocab_tokens"]
    assert re.search(
        rf"{summary['vocab_tokens_from_vocab_catalogs']} tokens occur only in", trained.output
    )


def test_cheap_mistakes_fail_before_spark_starts(tmp_path, small_world_dir):
    """A wrong model path, mapping or table is one error line, and no JVM is started: with no
    Java on the PATH, starting Spark would fail with another error."""
    env = {**os.environ, "PATH": os.path.dirname(sys.executable), "JAVA_HOME": "/nonexistent"}
    catalog = str(small_world_dir / "catalog")

    def run(*args):
        done = subprocess.run(
            [sys.executable, "-m", "itemsage_cli.main", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert done.returncode == 1, done.stderr
        return done.stderr.strip().splitlines()

    assert run(
        "embed",
        "--catalog",
        catalog,
        "--model",
        str(tmp_path / "nope"),
        "--table",
        str(tmp_path / "t"),
    ) == [f"error: {tmp_path / 'nope'} is not a model checkpoint (no checkpoint.json)"]
    (tmp_path / "m.toml").write_text('[features.product_id]\nfrom = "sku"\n')
    [line] = run(
        "embed",
        "--catalog",
        catalog,
        "--model",
        str(tmp_path),
        "--table",
        str(tmp_path / "t"),
        "--mapping",
        str(tmp_path / "m.toml"),
    )
    assert "source column(s) ['sku'] not in the catalog" in line
    assert run(
        "build-index",
        "--table",
        str(tmp_path / "t"),
        "--surfaces",
        "conf/surfaces.toml",
        "--out",
        str(tmp_path / "i"),
    ) == [
        f"error: no Delta table at {tmp_path / 't'}: create it with `itemsage embed --table "
        f"{tmp_path / 't'} ...` first, or check the path"
    ]
