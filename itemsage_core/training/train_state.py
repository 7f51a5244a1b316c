"""A training run's whole state, saved every `checkpoint_every` steps so that a killed run can
resume (`itemsage train --resume`): model weights, optimiser moments, the step, each process's
random state and stream position, the history so far. JSON and safetensors only, never pickle.

    STATE_DIR/step-00000040/state.safetensors   model.* and optimizer.* tensors
    STATE_DIR/step-00000040/state.json          step, run fingerprint, optimiser settings, per
                                                process RNG states (numpy, torch, CUDA) and
                                                stream positions, history, sha256 of the tensors

STATE_DIR is a path or an object-store URI. A state's state.json, written last, marks it
complete: on a local disk the state is written into a temporary sibling directory and renamed
into place; on an object store (no rename) the tensors go under step-NNNNNNNN/ first. Either way
a kill leaves a complete state or one without state.json, which is never read. Resuming takes
the newest complete one whose tensors match their checksum; the KEEP newest are kept, and a run
that does not resume clears the states of earlier runs (`clear_train_states`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load, save_file

from itemsage_core.errors import ItemSageError
from itemsage_core.storage.files import sha256_file
from itemsage_core.storage.store import Store

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


def save_train_state(directory: str | os.PathLike, state: TrainState) -> str:
    """Write `state` under `directory` (a path or a URI), state.json last; keep the KEEP newest;
    returns its path."""
    store = Store(directory)
    key = f"{PREFIX}{state.step:08d}"
    if store.local:
        store.local_path("").mkdir(parents=True, exist_ok=True)
    # a local state is staged beside its final name, to be renamed there
    staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=store.path("") if store.local else None))
    try:
        _write_state(staging, state)
        store.delete(key)  # a rerun that reached the same step
        if store.local:
            os.replace(staging, store.local_path(key))
        else:
            for name in (STATE_TENSORS, STATE_JSON):
                store.upload(staging / name, f"{key}/{name}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    kept = _saved(store)[-KEEP:]
    for name in store.names(""):
        if name.startswith(PREFIX) and name not in kept:
            store.delete(name)
    return store.path(key)


def _write_state(folder: Path, state: TrainState) -> None:
    """The state's tensors, then its state.json (with their checksum), in `folder`."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in state.model.items()}
    for index, values in state.optimizer["state"].items():
        for key, value in values.items():
            tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value).cpu().contiguous()
    save_file(tensors, str(folder / STATE_TENSORS))
    meta = {
        "step": state.step,
        "fingerprint": state.fingerprint,
        "param_groups": state.optimizer["param_groups"],
        "processes": state.processes,
        "history": state.history,
        "sha256": sha256_file(folder / STATE_TENSORS),
    }
    (folder / STATE_JSON).write_text(json.dumps(meta, sort_keys=True) + "\n")


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


def clear_train_states(directory: str | os.PathLike) -> None:
    """Remove the states an earlier run left in `directory` (a run that does not resume starts
    its own history there)."""
    store = Store(directory)
    for name in store.names(""):
        if name.startswith(PREFIX):
            store.delete(name)


def _saved(store: Store) -> list[str]:
    """The names of the complete states (with their state.json), oldest first."""
    return [
        name
        for name in store.names("")
        if name.startswith(PREFIX) and store.exists(f"{name}/{STATE_JSON}")
    ]


def latest_train_state(directory: str | os.PathLike, fingerprint: dict) -> TrainState | None:
    """The newest state under `directory` whose tensors match their checksum (a damaged or
    unreadable one is passed over), or None when there is none; a state of a different run is
    an error."""
    fingerprint = json.loads(json.dumps(fingerprint))  # as saved: tuples become lists
    store = Store(directory)
    for name in reversed(_saved(store)):
        try:
            meta = json.loads(store.read_bytes(f"{name}/{STATE_JSON}"))
            tensors = store.read_bytes(f"{name}/{STATE_TENSORS}")
        except (FileNotFoundError, ValueError):  # a state half deleted, or not JSON
            continue
        if hashlib.sha256(tensors).hexdigest() != meta["sha256"]:
            continue
        changed = sorted(
            k
            for k in {*fingerprint, *meta["fingerprint"]}
            if fingerprint.get(k) != meta["fingerprint"].get(k)
        )
        if changed:
            raise ItemSageError(
                f"{os.fspath(directory)} holds the state of another run ({', '.join(changed)} "
                "differ): resume with the run's own options, or train without --resume"
            )
        return _loaded(load(tensors), meta)
    return None


def _loaded(tensors: dict[str, torch.Tensor], meta: dict) -> TrainState:
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
