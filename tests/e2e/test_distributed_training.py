"""`itemsage train --num-processes 2 --master local[2]` on real local Spark: the data prepared on
the executors, two training processes through TorchDistributor (DDP over gloo), rank 0's
checkpoint and held-out evaluation; the evaluation equals `evaluate --prepared` and agrees with
the in-process protocol; a run whose whole process group is killed resumes to a valid model
and leaves no training process behind."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from itemsage_core.model.checkpoint import load_checkpoint

pytestmark = pytest.mark.spark

ITEMSAGE = [sys.executable, "-m", "itemsage_cli.main"]


def itemsage_json(*args: str) -> dict:
    done = subprocess.run(
        [*ITEMSAGE, *args, "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_two_processes_train_and_evaluate(small_world_dir, tiny_train_args, tmp_path):
    out = tmp_path / "model"
    command = [
        *ITEMSAGE,
        "train",
        *tiny_train_args(
            small_world_dir, out, "--master", "local[2]", "--num-processes", "2", "--epochs", "3"
        ),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "in each of 2 processes" in done.stdout + done.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["training"]["processes"] == 2
    assert len(summary["peak_rss_mb_per_process"]) == 2
    assert set(summary["stages"]) == {"prepare_s", "train_s"}
    assert summary["data"]["train_examples"] + summary["data"]["heldout_examples"] > 0
    checkpoint = load_checkpoint(out)
    assert checkpoint.config["objective"] == "engagements"
    heldout = summary["heldout"]
    assert heldout["index_size"] == 400
    assert heldout["overall"] > 0.1  # random ranking: 10 / 400 = 0.025

    prepared = itemsage_json("evaluate", "--model", str(out), "--prepared", f"{out}.prepared")
    assert prepared["overall"] == heldout["overall"]
    assert prepared["model_version"] == checkpoint.model_version
    in_process = itemsage_json(
        "evaluate",
        "--model",
        str(out),
        "--catalog",
        str(small_world_dir / "catalog"),
        "--engagements",
        str(small_world_dir / "engagements"),
    )
    assert in_process["examples"] == heldout["examples"]
    assert in_process["task_examples"] == heldout["task_examples"]
    assert abs(in_process["overall"] - heldout["overall"]) <= 0.01


def test_the_catalog_objective_trains_on_two_processes(small_world_dir, tiny_train_args, tmp_path):
    out = tmp_path / "model"
    arguments = ("--master", "local[2]", "--num-processes", "2", "--epochs", "4")
    command = [
        *ITEMSAGE,
        "train",
        *tiny_train_args(small_world_dir, out, *arguments, engagements=False),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "paired with a lexical neighbour" in done.stdout + done.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["heldout"] is None and summary["training"]["processes"] == 2
    assert summary["data"]["catalog_pairs"] == 800
    assert load_checkpoint(out).config["objective"] == "catalog"
    quality = itemsage_json(
        "evaluate-catalog",
        "--model",
        str(out),
        "--catalog",
        str(small_world_dir / "catalog"),
        "--label-column",
        "product_type",
    )
    for scores in quality["agreement"].values():
        assert scores["itemsage"] > scores["random"]
