"""A training run's whole state, saved every `checkpoint_every` steps so that a killed run can
resume (`itemsage train --resume`): model weights, optimiser moments, the step, each process's
random state and stream position, the history so far. JSON and safetensors only, never pickle.

    STATE_DIR/step-00000040/state.safetensors   model.* and optimizer.* tensors
    STATE_DIR/step-00000040/state.json          step, run fingerprint, optimiser settings, per
                                                process RNG states (numpy, torch, CUDA) and
                                                stream positions, history, sha256 of the tensors

A state is written into a temporary sibling directory and renamed into place, so a kill leaves
a complete state or none; resuming takes the newest complete one; the KEEP newest are kept, and
a run that does not resume clears the states of earlier runs (`clear_train_states`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from itemsage_core.errors import ItemSageError
from itemsage_core.storage.files import sha256_file

STATE_JSON, STATE_TENSORS, PREFIX = "state.json", "state.safetensors", "step-"
KEEP = 2


@dataclasses.dataclass
class TrainState:
    """Everything a run needs to go on from `step` as if it had never stopped."""

    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict  # a torch optimizer's state_dict
    processes: list[dict]  # per rank: RNG states (random_state) and objective "positions"
    history: list[dict]
    fingerprint: dict  # the settings a resumed run must share


def save_train_state(directory: str | Path, state: TrainState) -> Path:
    """Write `state` under `directory` (atomically); keep the KEEP newest; returns its path."""
    directory = Path(directory)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in state.model.items()}
    for index, values in state.optimizer["state"].items():
        for key, value in values.items():
            tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value).cpu().contiguous()
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{PREFIX}{state.step:08d}"
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=directory))
    try:
        save_file(tensors, str(staging / STATE_TENSORS))
        meta = {
            "step": state.step,
            "fingerprint": state.fingerprint,
            "param_groups": state.optimizer["param_groups"],
            "processes": state.processes,
            "history": state.history,
            "sha256": sha256_file(staging / STATE_TENSORS),
        }
        (staging / STATE_JSON).write_text(json.dumps(meta, sort_keys=True) + "\n")
        if final.exists():  # a rerun that reached the same step
            shutil.rmtree(final)
        os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for old in _saved(directory)[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def random_state(rng: np.random.Generator) -> dict:
    """This process's RNG states as JSON: numpy's `rng`, torch's CPU (and CUDA) generators."""
    state = {
        "numpy": rng.bit_generator.state,
        "torch": torch.get_rng_state().numpy().tobytes().hex(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state().numpy().tobytes().hex()
    return state


def set_random_state(rng: np.random.Generator, state: dict) -> None:
    """Put back what random_state saved."""
    rng.bit_generator.state = state["numpy"]
    torch.set_rng_state(torch.frombuffer(bytearray.fromhex(state["torch"]), dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(
            torch.frombuffer(bytearray.fromhex(state["cuda"]), dtype=torch.uint8)
        )


def clear_train_states(directory: str | Path) -> None:
    """Remove the states an earlier run left in `directory` (a run that does not resume starts
    its own history there)."""
    for old in Path(directory).glob(f"{PREFIX}*"):
        shutil.rmtree(old, ignore_errors=True)


def _saved(directory: Path) -> list[Path]:
    """The complete states under `directory`, oldest first."""
    return sorted(p for p in directory.glob(f"{PREFIX}*") if (p / STATE_JSON).is_file())


def latest_train_state(directory: str | Path, fingerprint: dict) -> TrainState | None:
    """The newest state under `directory` whose tensors match their checksum (a damaged one is
    passed over), or None when there is none; a state of a different run is an error."""
    fingerprint = json.loads(json.dumps(fingerprint))  # as saved: tuples become lists
    for path in reversed(_saved(Path(directory))):
        meta = json.loads((path / STATE_JSON).read_text())
        if sha256_file(path / STATE_TENSORS) != meta["sha256"]:
            continue
        changed = sorted(
            k
            for k in {*fingerprint, *meta["fingerprint"]}
            if fingerprint.get(k) != meta["fingerprint"].get(k)
        )
        if changed:
            raise ItemSageError(
                f"{directory} holds the state of another run ({', '.join(changed)} differ): "
                "resume with the run's own options, or train without --resume"
            )
        return _loaded(path, meta)
    return None


def _loaded(path: Path, meta: dict) -> TrainState:
    tensors = load_file(str(path / STATE_TENSORS))
    model = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    moments: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            moments.setdefault(int(index), {})[name] = value
    return TrainState(
        step=meta["step"],
        model=model,
        optimizer={"state": moments, "param_groups": meta["param_groups"]},
        processes=meta["processes"],
        history=meta["history"],
        fingerprint=meta["fingerprint"],
    )
