"""One embedding task without Spark (itemsage_core.embedding.embed_task), on the CPU and, where
CUDA is visible, on the GPU: every row lands in exactly one file, the bad ones with their reasons,
and the vectors are the in-process encoder's (on a GPU: the CPU's up to float rounding).
The CUDA cases are skipped on machines without a GPU (CI); bench/gpu_bench.py runs them on one.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from itemsage_core.contracts.catalog_contract import PRODUCT_ID, repeated_ids_of, validate_catalog
from itemsage_core.embedding.batch_embedder import BatchEmbedder
from itemsage_core.embedding.embed_task import embed_task, read_slices, row_group_slices
from itemsage_core.features.vocab_coverage import add_coverage
from itemsage_core.model.checkpoint import read_checkpoint_manifest
from itemsage_core.model.inference import device_for_task
from itemsage_core.storage.parquet_io import read_parquet, row_groups, write_parquet_dataset

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]


def _catalog_with_bad_rows(small_world, directory):
    catalog = small_world.catalog.slice(0, 120)
    ids = catalog.column(PRODUCT_ID).to_pylist()
    ids[1] = ids[0]  # a duplicate id: both copies are rejected
    titles = catalog.column("title").to_pylist()
    titles[2] = ""  # an empty title
    bad = catalog.set_column(0, PRODUCT_ID, pa.array(ids)).set_column(1, "title", pa.array(titles))
    write_parquet_dataset(bad, directory, rows_per_file=50)
    return bad


@pytest.mark.parametrize("device", DEVICES)
def test_a_task_embeds_or_quarantines_every_row(device, tmp_path, small_world, tiny_model_dir):
    catalog = _catalog_with_bad_rows(small_world, tmp_path / "catalog")
    version = read_checkpoint_manifest(tiny_model_dir)["model_version"]
    embedder = BatchEmbedder.for_model(str(tiny_model_dir), version, batch_size=32, device=device)
    repeated = repeated_ids_of(catalog.column(PRODUCT_ID))
    targets = {kind: str(tmp_path / kind) for kind in ("embeddings", "quarantine")}
    at = dt.datetime(2026, 11, 28, tzinfo=dt.timezone.utc)
    files = []
    for item in row_group_slices(row_groups(tmp_path / "catalog"), 2, min_rows=20):
        # several tasks, as on executors
        files += embed_task(
            read_slices([item]), embedder, targets, "run-1", at, 256, None, repeated
        )
    rows = {
        kind: sum(f["rows"] for f in files if f["kind"] == kind)
        for kind in ("embeddings", "quarantine")
    }
    assert rows == {"embeddings": 117, "quarantine": 3}
    quarantine = read_parquet(tmp_path / "quarantine")
    assert sorted(quarantine.column(PRODUCT_ID).to_pylist()) == sorted(
        catalog.column(PRODUCT_ID).to_pylist()[:3]
    )
    assert all(quarantine.column("reason").to_pylist())

    valid = validate_catalog(catalog).valid.sort_by(PRODUCT_ID)
    # Each task's counts are its own embedded rows' (the embedder is shared by the tasks).
    assert all(f["coverage"] is None for f in files if f["kind"] == "quarantine")
    coverage = {}
    for f in files:
        if f["kind"] == "embeddings":
            add_coverage(coverage, json.loads(f["coverage"]))
    assert coverage == embedder.checkpoint.vocab.encode(valid).coverage

    written = read_parquet(tmp_path / "embeddings").sort_by(PRODUCT_ID)
    assert written.column(PRODUCT_ID).equals(valid.column(PRODUCT_ID))
    got = np.stack(written.column("embedding").to_numpy(zero_copy_only=False))
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    on_cpu = BatchEmbedder.for_model(
        str(tiny_model_dir), version, device="cpu", precision="fp32"
    ).vectors(valid)
    cosine = np.sum(got * on_cpu, axis=1)
    if device == "cpu":
        assert np.abs(got - on_cpu).max() <= 1e-5
    else:  # on CUDA: the same directions (test_cuda_fp32_matches_the_cpu bounds the values)
        assert cosine.min() >= 0.99


@CUDA
def test_cuda_fp32_matches_the_cpu(small_world, tiny_model_dir):
    version = read_checkpoint_manifest(tiny_model_dir)["model_version"]
    catalog = small_world.catalog.slice(0, 200)
    on_gpu = BatchEmbedder.for_model(
        str(tiny_model_dir), version, device="cuda", precision="fp32"
    ).vectors(catalog)
    on_cpu = BatchEmbedder.for_model(
        str(tiny_model_dir), version, device="cpu", precision="fp32"
    ).vectors(catalog)
    assert np.abs(on_gpu - on_cpu).max() <= 1e-4


@CUDA
def test_a_task_uses_the_gpu_spark_assigned_it():
    last = str(torch.cuda.device_count() - 1)
    assert device_for_task([last]) == f"cuda:{last}"
    assert device_for_task([]) == "cuda"
