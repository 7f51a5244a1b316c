"""Benchmarks: every stage against its peer and its limit (`make bench`, `make bench-full`).

    python bench/run.py [--products N ...] [--workdir DIR] [--out bench/results/latest.json]

For each size: a synthetic world (about 4 images per product), a paper-shaped encoder
(initialised, not trained: throughput does not depend on the weights; vocabulary from the
catalog), then
- the machine's fp32 matmul peak with the same threads (the encoder's limit),
- tokenise + encode, the full and the [CLS]-only forward (outputs compared), FLOPs per product,
- the in-process encoder end to end from catalog rows (tokenise + [CLS]-only forward), the peer
  of the Spark job, which does the same per row plus validation, hashing and writing,
- the embedding job on local Spark with as many task slots as the encoder had threads,
  and its Python driver's peak RSS,
- the index job (one surface, hash shards, 2 tasks) against raw hnswlib `add_items` on the
  same vectors and parameters, and its queries against faiss IndexHNSWFlat and exact search.
Prints a table per size; writes a flat JSON object (the largest size's figures, plus per-size
ones under `sizes`). BENCHMARKS.md explains each figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.index_bench import bench_surface
from bench.workload import cpu_model, paper_model, timed, write_catalog
from itemsage_core.contracts.catalog_contract import validate_catalog
from itemsage_core.features.product_features import encode_products
from itemsage_core.model.encoder import ItemSageEncoder
from itemsage_core.model.inference import embed_features

THREADS = 2
SURFACES = """
[surfaces.all]
shards = 2
M = 16
ef_construction = 200
ef_search = 64
"""
# The Python driver's own peak RSS, read from inside it when the job ends (VmHWM: getrusage's
# maxrss would include the forking parent's peak, which Linux carries across exec).
DRIVER = """
import atexit, re, sys, runpy
path = sys.argv[1]
atexit.register(lambda: open(path, "w").write(str(int(re.search(
    r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) // 1024)))
sys.argv = ["itemsage", *sys.argv[2:]]
runpy.run_module("itemsage_cli.main", run_name="__main__")
"""


def matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    """fp32 GFLOP/s of a square matmul with the benchmark's threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - started) / 1e9


def forward_flops(model: ItemSageEncoder, features, cls_only: bool) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    n = min(256, len(features))
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(features.batch(np.arange(n)), cls_only=cls_only)
    return counter.get_total_flops() / n


def run_cli(args: list[str], rss_file: Path | None = None) -> float:
    command = (
        [sys.executable, "-c", DRIVER, str(rss_file)]
        if rss_file
        else [sys.executable, "-m", "itemsage_cli.main"]
    ) + args
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(args[:1])} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def bench_size(products: int, workdir: Path, progress) -> dict:
    out: dict = {"products": products}
    progress(f"{products} products: writing the catalog")
    catalog_dir = workdir / f"catalog-{products}"
    sample = write_catalog(products, catalog_dir)
    catalog = validate_catalog(sample).valid
    out["images_per_product"] = float(
        np.mean(
            pc.list_value_length(sample.column("image_embeddings")).to_numpy(zero_copy_only=False)
        )
    )
    out["in_process_sample"] = catalog.num_rows
    del sample

    model_dir = workdir / "model"
    model, vocab = paper_model(catalog, model_dir)

    progress("tokenise and encode, then the encoder's two paths")
    features, seconds = timed(lambda: encode_products(catalog, vocab, 256))
    out["tokenize_pps"] = len(features) / seconds
    sample = np.arange(min(len(features), 20_000))
    full, seconds = timed(lambda: embed_features(model, features, sample, cls_only=False))
    out["encoder_full_forward_pps"] = len(sample) / seconds
    cls, seconds = timed(lambda: embed_features(model, features, sample))
    out["encoder_cls_forward_pps"] = len(sample) / seconds
    out["cls_vs_full_max_abs_diff"] = float(np.abs(full - cls).max())
    out["encoder_flops_per_product"] = forward_flops(model, features, cls_only=True)
    out["encoder_full_flops_per_product"] = forward_flops(model, features, cls_only=False)

    def end_to_end(cls_only: bool) -> float:
        """Products/s from catalog rows: tokenise + encode + forward, in 10k-product slices."""

        def run():
            for start in range(0, catalog.num_rows, 10_000):
                part = encode_products(catalog.slice(start, 10_000), vocab, 256)
                embed_features(model, part, batch_size=512, cls_only=cls_only)

        return catalog.num_rows / timed(run)[1]

    progress("in-process encoder end to end (tokenise + forward), both paths")
    out["encoder_cls_pps"] = end_to_end(True)
    out["encoder_full_pps"] = end_to_end(False)

    progress(f"embedding job on local[{THREADS}]")
    table = workdir / f"table-{products}"
    summary = workdir / f"embed-{products}.json"
    rss = workdir / f"rss-{products}"
    started = time.perf_counter()
    run_cli(
        [
            "embed",
            "--catalog",
            str(catalog_dir),
            "--model",
            str(model_dir),
            "--table",
            str(table),
            "--master",
            f"local[{THREADS}]",
            "--summary-json",
            str(summary),
        ],
        rss,
    )
    job = json.loads(summary.read_text())
    # embedded rows over the job before its commit (driver preparation included), as before
    out["embed_job_pps"] = job["embedded"] / (
        job["seconds"]["total_s"] - job["seconds"]["commit_s"]
    )
    out["embed_job_wall_s"] = time.perf_counter() - started
    out["spark_efficiency"] = out["embed_job_pps"] / out["encoder_cls_pps"]
    out["driver_peak_rss_mb"] = int(rss.read_text())

    progress("index job (one surface, 2 hash shards) and its peers")
    surfaces = workdir / "surfaces.toml"
    surfaces.write_text(SURFACES)
    index_root = workdir / f"index-{products}"
    build_wall = run_cli(
        [
            "build-index",
            "--table",
            str(table),
            "--surfaces",
            str(surfaces),
            "--out",
            str(index_root),
            "--master",
            f"local[{THREADS}]",
        ]
    )
    out["e2e_seconds"] = out["embed_job_wall_s"] + build_wall
    peers = bench_surface(str(index_root), "all", queries=1000)
    out.update(
        {
            "hnsw_build_s": peers["job_build_stage_s"],
            "index_job_wall_s": build_wall,
            "hnsw_recall_at_10": peers["recall_at_10"],
            "hnsw_qps": peers["qps"],
            "raw_hnswlib_add_items_s": peers["raw_hnswlib_add_items_s"],
            "raw_hnswlib_recall_at_10": peers["raw_hnswlib_recall_at_10"],
            "raw_hnswlib_qps": peers["raw_hnswlib_qps"],
            "faiss_hnsw_build_s": peers["faiss_hnsw_build_s"],
            "faiss_hnsw_recall_at_10": peers["faiss_hnsw_recall_at_10"],
            "faiss_hnsw_qps": peers["faiss_hnsw_qps"],
            "index_job_overhead": peers["job_build_stage_s"] / peers["raw_hnswlib_add_items_s"],
        }
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, nargs="+", default=[20_000])
    parser.add_argument("--workdir", default=None, help="default: a temporary directory")
    parser.add_argument("--out", default=str(ROOT / "bench/results/latest.json"))
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    os.environ.setdefault("ITEMSAGE_SPARK_LOG_LEVEL", "ERROR")

    def progress(message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    peak = matmul_peak()
    results = {}
    with tempfile.TemporaryDirectory(prefix="itemsage-bench-", dir=args.workdir) as tmp:
        for products in args.products:
            results[products] = bench_size(products, Path(tmp), progress)
            results[products]["encoder_peak_fraction"] = (
                results[products]["encoder_cls_forward_pps"]
                * results[products]["encoder_flops_per_product"]
                / (peak * 1e9)
            )
    largest = results[max(results)]
    report = {
        **largest,
        "matmul_fp32_gflops": peak,
        "threads": THREADS,
        "cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "torch": torch.__version__,
        "gpu": "not lent to this task"
        if not torch.cuda.is_available()
        else torch.cuda.get_device_name(),
        "sizes": {str(k): v for k, v in results.items()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    keys = [
        "tokenize_pps",
        "encoder_full_pps",
        "encoder_cls_pps",
        "encoder_full_forward_pps",
        "encoder_cls_forward_pps",
        "cls_vs_full_max_abs_diff",
        "encoder_flops_per_product",
        "encoder_peak_fraction",
        "embed_job_pps",
        "spark_efficiency",
        "driver_peak_rss_mb",
        "hnsw_build_s",
        "raw_hnswlib_add_items_s",
        "index_job_overhead",
        "hnsw_recall_at_10",
        "hnsw_qps",
        "faiss_hnsw_build_s",
        "faiss_hnsw_recall_at_10",
        "faiss_hnsw_qps",
        "e2e_seconds",
    ]
    print(f"{'figure':28s}" + "".join(f"{n:>14,d}" for n in results))
    for key in keys:
        cells = "".join(f"{results[n][key]:>14.4g}" for n in results)
        print(f"{key:28s}{cells}")
    print(
        f"matmul peak {peak:.0f} GFLOP/s fp32 with {THREADS} threads on {cpu_model()}; "
        f"written to {args.out}"
    )


if __name__ == "__main__":
    main()
