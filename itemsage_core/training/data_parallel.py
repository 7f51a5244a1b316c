"""One process of data-parallel training on prepared data (`itemsage train --num-processes`, run
by Spark's TorchDistributor in jobs/distributed_training.py, or by plain torchrun).

The process joins the group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT;
gloo on CPU, nccl on CUDA), streams its own shards of the training examples and/or catalog
pairs (streamed_batches.py) through the trainer's one loop, whose DDP all-reduces the
gradients; rank 0 then evaluates on the held-out examples (evaluation.evaluate_prepared) and
writes the checkpoint in the one format (model/checkpoint.py). Without torchrun's variables it
trains alone.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import threading
import time

import torch
import torch.distributed as dist

from itemsage_core.model.checkpoint import save_checkpoint
from itemsage_core.model.config import ModelConfig
from itemsage_core.model.inference import pick_device
from itemsage_core.training.config import HELDOUT_INDEX_SIZE, StreamConfig, TrainRun
from itemsage_core.training.evaluation import evaluate_prepared
from itemsage_core.training.model_runs import checkpoint_settings
from itemsage_core.training.prepared_data import read_prepared_manifest, read_prepared_vocab
from itemsage_core.training.streamed_batches import streamed_objectives
from itemsage_core.training.trainer import Progress, gathered, process_group, train_objectives


@dataclasses.dataclass(frozen=True)
class PreparedRun:
    """A training run over the data prepared for it in `data_dir`, and how its processes stream
    that data: what every process needs (pickled to them). All else (output, settings, model
    options, loop, device, objectives) is the run's."""

    run: TrainRun
    data_dir: str
    stream: StreamConfig = StreamConfig()
    threads: int = 0  # torch threads per process (0: torch's default)
    index_size: int = HELDOUT_INDEX_SIZE  # products the held-out evaluation retrieves from


def peak_rss_mb() -> float:
    """This process's peak resident memory, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _device(requested: str) -> torch.device:
    """The process's device: its own GPU under torchrun (LOCAL_RANK), as `requested`."""
    dev = pick_device(requested)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(dev)
    return dev


def _exit_with_parent() -> None:
    """End this process when its parent (torchrun's agent) dies: torchrun starts its workers in
    sessions of their own, so a run killed by SIGKILL would otherwise leave them training on."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def train_process(prepared: PreparedRun, progress: Progress | None = None) -> dict | None:
    """Train as one process of the group; rank 0 returns the model version, the held-out
    evaluation and the summary (the others None)."""
    started = time.perf_counter()
    run = prepared.run
    if "TORCHELASTIC_RUN_ID" in os.environ:
        _exit_with_parent()
    if prepared.threads:
        torch.set_num_threads(prepared.threads)
    dev = _device(run.device)
    grouped = "WORLD_SIZE" in os.environ and not dist.is_initialized()
    if grouped:
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    try:
        rank, world = process_group()
        say = progress if rank == 0 else None
        manifest = read_prepared_manifest(prepared.data_dir)
        vocab = read_prepared_vocab(prepared.data_dir, manifest)
        model_config = ModelConfig.create(
            vocab.size,
            hash_seed=run.hash_seed,
            image_dim=manifest["options"]["image_dim"],
            **dict(run.model_options),
        )
        fingerprint = {
            "model": model_config.to_dict(),
            "data": manifest["files"],
            "stream": dataclasses.asdict(prepared.stream),
        }
        model, history = train_objectives(
            streamed_objectives(
                prepared.data_dir, run.objectives(), run.train, prepared.stream, rank, world
            ),
            model_config,
            run.train,
            dev,
            say,
            run.loop,
            fingerprint,
        )
        rss = gathered(peak_rss_mb())
        if rank:
            return None
        evaluation = None
        if run.engagements:
            if say:
                say(f"evaluating on {manifest['counts']['heldout_examples']} held-out examples")
            evaluation = evaluate_prepared(
                model, prepared.data_dir, index_size=prepared.index_size, device=dev
            )
        rss[0] = peak_rss_mb()  # rank 0's peak after the evaluation too
        summary = {
            "data": manifest["counts"],
            "training": history,
            "heldout": evaluation.to_dict() if evaluation else None,
            "peak_rss_mb_per_process": rss,
            "seconds": time.perf_counter() - started,
        }
        settings = checkpoint_settings(run)
        version = save_checkpoint(run.out, model.cpu(), vocab, settings, summary)
        return {"model_version": version, "evaluation": evaluation, "summary": summary}
    finally:
        if grouped:
            dist.destroy_process_group()
