"""Training state and resume: a resumed run continues exactly where the saved state left it,
a state of another run is refused, a damaged state is passed over, and a run killed by SIGKILL
resumes to a valid model."""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from itemsage_core.errors import ItemSageError
from itemsage_core.model.checkpoint import load_checkpoint
from itemsage_core.model.config import ModelConfig
from itemsage_core.training.config import LoopConfig, TrainConfig
from itemsage_core.training.train_state import STATE_TENSORS
from itemsage_core.training.trainer import prepare_data, train

CONFIG = TrainConfig(epochs=2, batch_size=32, random_negatives=16, warmup_steps=3)
ITEMSAGE = [sys.executable, "-m", "itemsage_cli.main"]


@pytest.fixture(scope="module")
def data(small_world):
    return prepare_data(small_world.catalog, small_world.engagements, 0.1)


def tiny(data) -> ModelConfig:
    return ModelConfig.create(data.vocab.size, d_model=32, ffn_dim=64, mlp_hidden=32)


def weights_equal(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_resumed_run_ends_exactly_as_an_uninterrupted_one(data, tmp_path):
    loop = LoopConfig(checkpoint_every=10, state_dir=tmp_path / "state")
    whole, history = train(data, tiny(data), CONFIG, device="cpu", loop=loop)
    saved = sorted(p.name for p in (tmp_path / "state").iterdir())
    assert len(saved) == 2 and saved[-1] == f"step-{history['steps'] // 10 * 10:08d}"
    shutil.rmtree(tmp_path / "state" / saved[-1])  # as if killed before the last save
    resume = dataclasses.replace(loop, resume=True)
    resumed, again = train(data, tiny(data), CONFIG, device="cpu", loop=resume)
    assert again["resumed_from_step"] == int(saved[0].split("-")[1])
    assert weights_equal(whole, resumed)
    assert again["history"][-1]["step"] == history["history"][-1]["step"] == history["steps"]


def test_a_damaged_state_is_passed_over_and_another_runs_state_refused(data, tmp_path):
    loop = LoopConfig(checkpoint_every=5, state_dir=tmp_path / "state", max_steps=12)
    train(data, tiny(data), CONFIG, device="cpu", loop=loop)
    newest = sorted((tmp_path / "state").iterdir())[-1]
    assert newest.name == "step-00000010"
    damaged = bytearray((newest / STATE_TENSORS).read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    (newest / STATE_TENSORS).write_bytes(bytes(damaged))
    resume = dataclasses.replace(loop, resume=True)
    _, history = train(data, tiny(data), CONFIG, device="cpu", loop=resume)
    assert history["resumed_from_step"] == 5
    other = dataclasses.replace(CONFIG, learning_rate=0.5)
    with pytest.raises(ItemSageError, match=r"another run \(train differ\)"):
        train(data, tiny(data), other, device="cpu", loop=resume)


def test_a_run_that_does_not_resume_clears_earlier_states(data, tmp_path):
    loop = LoopConfig(checkpoint_every=5, state_dir=tmp_path / "state", max_steps=12)
    train(data, tiny(data), CONFIG, device="cpu", loop=loop)
    assert sorted(p.name for p in loop.state_dir.iterdir()) == ["step-00000005", "step-00000010"]
    shorter = dataclasses.replace(loop, max_steps=7)
    train(data, tiny(data), CONFIG, device="cpu", loop=shorter)
    assert sorted(p.name for p in loop.state_dir.iterdir()) == ["step-00000005"]
    _, history = train(
        data, tiny(data), CONFIG, device="cpu", loop=dataclasses.replace(shorter, resume=True)
    )
    assert history["resumed_from_step"] == 5


def test_streaming_options_need_a_run_on_spark(small_world_dir, tmp_path):
    done = subprocess.run(
        [*ITEMSAGE, "train", "--catalog", str(small_world_dir / "catalog"), "--out", "m"]
        + ["--shuffle-buffer", "100"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "--shuffle-buffer is for training on Spark: add --num-processes N" in done.stderr


def test_no_state_to_resume_from_starts_afresh(data, tmp_path):
    loop = LoopConfig(max_steps=3, state_dir=tmp_path / "none", resume=True)
    lines = []
    _, history = train(data, tiny(data), CONFIG, lines.append, "cpu", loop)
    assert history["resumed_from_step"] == 0 and history["steps"] == 3
    assert any("no saved state" in line for line in lines)


@pytest.mark.faults
def test_a_run_killed_by_sigkill_resumes_to_a_valid_model(
    small_world_dir, tiny_train_args, tmp_path
):
    out, state = tmp_path / "model", tmp_path / "model.state"
    arguments = ("--epochs", "4", "--checkpoint-every", "4", "--max-steps", "200")
    command = [*ITEMSAGE, "train", *tiny_train_args(small_world_dir, out, *arguments)]
    killed = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not list(state.glob("step-*/state.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL and not out.exists()
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from step" in resumed.stderr + resumed.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["training"]["resumed_from_step"] >= 4
    assert summary["training"]["steps"] == 200
    checkpoint = load_checkpoint(out)
    assert checkpoint.config["train"]["batch_size"] == 32
