"""Training with no shared mount: prepared data and training states on an object store (a real
S3 API, moto's server on 127.0.0.1). Prepared files are written by the Spark tasks through pyarrow
and become the data by the manifest, written last; states are complete by their state.json,
written last; a killed distributed run resumes from the bucket alone."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_index_object_store import itemsage, s3_env
from test_model_object_store import TINY, WORLD, s3, upload_world  # noqa: F401 (s3: a fixture they use)

from itemsage_core.errors import ItemSageError
from itemsage_core.model.checkpoint import load_checkpoint
from itemsage_core.storage.parquet_io import open_parquet
from itemsage_core.storage.store import Store
from itemsage_core.training.config import ENGAGEMENTS, StreamConfig, TrainConfig
from itemsage_core.training.prepared_data import (
    prepared_files,
    read_prepared_manifest,
    read_prepared_vocab,
)
from itemsage_core.training.streamed_batches import streamed_objectives
from itemsage_core.training.train_state import (
    STATE_JSON,
    STATE_TENSORS,
    TrainState,
    clear_train_states,
    latest_train_state,
    save_train_state,
)

pytest.importorskip("moto.server", reason="moto[server] is in the dev extra")
SECRET = s3_env("")["AWS_SECRET_ACCESS_KEY"]


def a_state(step: int) -> TrainState:
    """A small state of a real model and optimiser after one step."""
    torch.manual_seed(step)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 4)).sum().backward()
    optimizer.step()
    return TrainState(
        step=step,
        model=model.state_dict(),
        optimizer=optimizer.state_dict(),
        processes=[{"positions": [{"epoch": 0, "batches": step}]}],
        history=[{"step": step}],
        fingerprint={"run": "a"},
    )


def processes_of(marker: str) -> list[int]:
    """The processes whose environment holds MARKER=marker (every descendant of a command run
    with it inherits it)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"MARKER={marker}".encode() in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:
            pass
    return found


@pytest.mark.parametrize("where", ["local", "s3"])
def test_states_are_saved_kept_loaded_passed_over_and_cleared(where, request, tmp_path):
    directory = "s3://lake/models/m1.state" if where == "s3" else str(tmp_path / "m1.state")
    if where == "s3":
        request.getfixturevalue("s3")
    store = Store(directory)
    for step in (3, 6, 9):
        assert save_train_state(directory, a_state(step)) == store.path(f"step-{step:08d}")
    assert store.names("") == ["step-00000006", "step-00000009"]  # the KEEP newest
    assert store.names("step-00000009") == [STATE_JSON, STATE_TENSORS]
    loaded = latest_train_state(directory, {"run": "a"})
    assert loaded.step == 9 and loaded.processes[0]["positions"][0]["batches"] == 9
    for name, tensor in a_state(9).model.items():
        assert torch.equal(loaded.model[name], tensor)
    assert set(loaded.optimizer["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}

    damaged = bytearray(store.read_bytes(f"step-00000009/{STATE_TENSORS}"))
    damaged[len(damaged) // 2] ^= 0xFF
    store.write_bytes(f"step-00000009/{STATE_TENSORS}", bytes(damaged))
    store.write_bytes(f"step-00000012/{STATE_TENSORS}", b"a save killed before its state.json")
    assert latest_train_state(directory, {"run": "a"}).step == 6
    with pytest.raises(ItemSageError, match=r"another run \(run differ\)"):
        latest_train_state(directory, {"run": "b"})

    save_train_state(directory, a_state(12))  # replaces the incomplete one
    assert store.names("") == ["step-00000009", "step-00000012"]
    assert latest_train_state(directory, {"run": "a"}).step == 12
    clear_train_states(directory)
    assert store.names("") == []
    assert latest_train_state(directory, {"run": "a"}) is None


def sha256_of(uri: str) -> str:
    parent, name = uri.rsplit("/", 1)
    return hashlib.sha256(Store(parent).read_bytes(name)).hexdigest()


@pytest.mark.spark
@pytest.mark.usefixtures("s3")
def test_data_prepared_on_s3_is_whole_or_the_previous_one(small_world_dir, tmp_path):
    upload_world(small_world_dir)
    data = "s3://lake/prepared"
    outputs = []

    def prepare(engagements: str) -> subprocess.CompletedProcess:
        done = itemsage(
            "prepare-training", "--catalog", f"{WORLD}/catalog", "--engagements", engagements,
            "--out", data, "--vocab", "100,100,100", "--shards", "2", "--master", "local[2]",
            env=dict(os.environ), cwd=tmp_path,
        )  # fmt: skip
        outputs.append(done.stdout + done.stderr)
        return done

    first = prepare(f"{WORLD}/engagements")
    assert first.returncode == 0, first.stderr[-3000:]
    manifest = json.loads(first.stdout)
    assert read_prepared_manifest(data) == manifest
    assert Store(data).names("") == sorted(["manifest.json", manifest["run"]])
    for part, count in (("train", "train_examples"), ("heldout", "heldout_examples")):
        files = prepared_files(data, manifest, part)
        assert len(files) == 2
        assert all(f.startswith(f"{data}/{manifest['run']}/{part}/part-") for f in files)
        rows = sum(open_parquet(f).metadata.num_rows for f in files)
        assert rows == manifest["counts"][count] > 0
    for file in manifest["files"]:
        assert sha256_of(f"{data}/{manifest['run']}/{file['path']}") == file["sha256"]
    assert read_prepared_vocab(data, manifest).size == manifest["vocab_tokens"]
    [objective] = streamed_objectives(
        data,
        {ENGAGEMENTS: 1.0},
        TrainConfig(batch_size=16, random_negatives=8),
        StreamConfig(shuffle_buffer=100, negatives=50),
    )
    source = objective.source
    assert next(source.stream).num_rows == 16 and source.pool.rows.num_rows <= 50

    # a preparation that fails (the catalog is no engagement log) leaves the data as it was
    failed = prepare(f"{WORLD}/catalog")
    assert failed.returncode == 1, failed.stderr[-3000:]
    assert "required column 'query_embedding' is missing" in failed.stderr
    assert f"{data} was left as it was" in failed.stderr  # after writing its products
    assert read_prepared_manifest(data) == manifest
    assert Store(data).names("") == sorted(["manifest.json", manifest["run"]])

    again = prepare(f"{WORLD}/engagements")
    assert again.returncode == 0, again.stderr[-3000:]
    replaced = json.loads(again.stdout)
    assert replaced["run"] != manifest["run"] and replaced["counts"] == manifest["counts"]
    assert Store(data).names("") == sorted(["manifest.json", replaced["run"]])
    assert all(SECRET not in text for text in outputs)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.spark
@pytest.mark.faults
@pytest.mark.usefixtures("s3")
def test_a_killed_distributed_run_resumes_from_the_bucket_alone(
    small_world_dir, tmp_path, tmp_path_factory, monkeypatch
):
    """SIGKILLed after its first state (torchrun's workers end with their agent), refused to
    resume with other options, resumed from the states on S3 with the data prepared there."""
    upload_world(small_world_dir)
    out = "s3://lake/models/m1"
    command = [
        sys.executable, "-m", "itemsage_cli.main", "train",
        "--catalog", f"{WORLD}/catalog", "--engagements", f"{WORLD}/engagements", "--out", out,
        "--master", "local[2]", "--num-processes", "2", "--epochs", "6", "--checkpoint-every", "3",
        *TINY,
    ]  # fmt: skip
    env = {**os.environ, "MARKER": str(tmp_path)}
    killed = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
        cwd=tmp_path,
    )
    states, deadline = Store(f"{out}.state"), time.monotonic() + 600
    while time.monotonic() < deadline:
        if any(states.exists(f"{name}/{STATE_JSON}") for name in states.names("")):
            break
        assert killed.poll() is None, "the run ended before saving a state"
        time.sleep(0.2)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert not Store(out).exists("checkpoint.json")
    deadline = time.monotonic() + 30
    while processes_of(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not processes_of(str(tmp_path))

    other = subprocess.run(
        [*command, "--resume", "--holdout-fraction", "0.2"],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert other.returncode == 2 and "holdout_fraction differ" in other.stderr
    summary = tmp_path_factory.mktemp("summary") / "summary.json"
    done = subprocess.run(
        [*command, "--resume", "--summary-json", str(summary)],
        capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-5000:]
    assert f"reusing the training data prepared in {out}.prepared" in output
    resumed = re.search(r"resuming from step (\d+), saved in (\S+)", output)
    assert resumed and int(resumed[1]) >= 3 and resumed[2] == f"{out}.state", output[-3000:]
    assert Store(out).exists("checkpoint.json")
    training = json.loads(summary.read_text())["training"]
    assert training["resumed_from_step"] >= 3 and training["processes"] == 2
    assert SECRET not in output + other.stdout + other.stderr
    assert list(tmp_path.iterdir()) == []  # no local path but the command line
    monkeypatch.setenv("ITEMSAGE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    assert load_checkpoint(out).model_version in output
