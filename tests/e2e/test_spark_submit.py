"""spark-submit.sh: safe argument passing and a real submission on the local master."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "spark-submit.sh"


def run(*args, **kw):
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, **kw)


def test_dry_run_prints_the_command_with_arguments_quoted(tmp_path):
    marker = tmp_path / "injected"
    result = run(
        "--dry-run",
        "--conf",
        "spark.executor.memory=2g",
        "validate",
        "--catalog",
        f"x; touch {marker}",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip().splitlines()[-1]
    assert line.startswith("spark-submit.sh: running: ")
    assert "--conf spark.executor.memory=2g" in line
    assert f"--catalog x\\;\\ touch\\ {marker}" in line
    assert "--py-files" in line and "itemsage_cli/spark_entry.py validate" in line
    assert not marker.exists()


def test_every_spark_job_is_submitted_and_an_unknown_one_refused():
    for job in ("validate", "embed", "build-index", "neighbours", "prepare-training", "train"):
        result = run("--dry-run", job, "--help")
        assert result.returncode == 0, result.stderr
        assert f"itemsage_cli/spark_entry.py {job} --help" in result.stdout
    assert run("frobnicate").returncode == 2
    assert "unknown job 'frobnicate'" in run("frobnicate").stderr
    assert run("--bogus", "validate").returncode == 2


@pytest.mark.spark
def test_validate_job_through_spark_submit(small_world_dir, tmp_path):
    marker = tmp_path / "injected"
    result = run(
        "--master",
        "local[1]",
        "validate",
        "--catalog",
        str(small_world_dir / "catalog"),
        "--json",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["catalog"]["rows"] == 400 and report["catalog"]["valid"] == 400
    bad = run("--master", "local[1]", "validate", "--catalog", f"x; touch {marker}", timeout=300)
    # spark-submit merges the Python driver's stderr into its stdout.
    assert bad.returncode == 1 and "error: cannot read catalog Parquet" in bad.stdout
    assert not marker.exists()
