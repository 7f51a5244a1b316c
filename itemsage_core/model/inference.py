"""Running the encoder: device and precision choice, batched embedding of ProductFeatures.

CUDA when available, CPU otherwise. Embedding is fp32 by default on every device: the same vectors
whichever executor ran, and on a GPU the embedding job is bound by per-row CPU work, not by the
forward pass (BENCHMARKS.md, H200). Training's 'auto' is bf16 autocast on CUDA. Always the exact
[CLS]-only path of the last layer (itemsage_core/model/encoder.py).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from itemsage_core.errors import ItemSageError
from itemsage_core.features.product_features import ProductFeatures
from itemsage_core.model.encoder import ItemSageEncoder

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def pick_device(requested: str = "auto") -> torch.device:
    """'auto' -> cuda if visible else cpu; 'cuda[:N]' fails clearly when CUDA is absent."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ItemSageError(f"device {requested} asked for, but CUDA is not available here")
    return device


def device_for_task(gpu_addresses: list[str], cuda_available: bool | None = None) -> str:
    """The device for a Spark task: the first GPU Spark assigned it (resource scheduling), else
    any visible CUDA device, else the CPU."""
    cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    if not cuda:
        return "cpu"
    return f"cuda:{gpu_addresses[0]}" if gpu_addresses else "cuda"


def autocast(device: torch.device, precision: str = "auto"):
    """The autocast context for a device and precision ('auto': bf16 on CUDA, fp32 on CPU)."""
    if precision not in PRECISIONS:
        raise ItemSageError(f"unknown precision '{precision}': one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def embed_features(
    model: ItemSageEncoder,
    features: ProductFeatures,
    indices: np.ndarray | None = None,
    batch_size: int = 1024,
    device: torch.device = torch.device("cpu"),
    precision: str = "fp32",
    cls_only: bool = True,
) -> np.ndarray:
    """(n, output_dim) float32 embeddings of the products at `indices` (all when None);
    `cls_only=False` runs the full last layer (same outputs, for comparison)."""
    idx = np.arange(len(features)) if indices is None else np.asarray(indices)
    out = np.empty((len(idx), model.config.output_dim), np.float32)
    was_training = model.training
    model.eval()
    with torch.inference_mode(), autocast(device, precision):
        for start in range(0, len(idx), batch_size):
            batch = features.batch(idx[start : start + batch_size]).to(device)
            out[start : start + batch_size] = model(batch, cls_only=cls_only).float().cpu().numpy()
    model.train(was_training)
    return out
