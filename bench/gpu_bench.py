"""The encoder and the embedding job's tasks on a CUDA GPU: products/s and GPU utilisation.

    python bench/gpu_bench.py [--products 200000] [--workers 1 4 8 16] [--out DIR]

Made for the lent GPU machine, which has PyTorch and pyarrow but no JVM and no pyspark: the job's
tasks run here exactly as a Spark executor runs them (`itemsage_core.embedding.embed_task`: read a
row-group slice with pyarrow, map, conform, check, tokenise, encode on the GPU, write the table's
data files), dispatched by a process pool to as many workers as a GPU executor would run tasks at
once (`spark.task.resource.gpu.amount` = 1 / workers). The driver's Delta commit is not GPU work
and is measured by bench/run.py.

Figures, written as they come to OUT/gpu_bench.json (and printed as a table at the end):
- the GPU's bf16 and fp32 matmul rates (the encoder's limits),
- the forward pass alone on encoded products, fp32 and bf16 autocast, [CLS]-only and full, at
  several batch sizes, with the share of the bf16 matmul rate reached,
- agreement with the CPU's fp32 outputs (max abs diff, cosine, top-10 neighbour overlap),
- the in-process encoder end to end from catalog rows (tokenise + forward) on one CPU thread,
- the job's tasks per worker count (and on the CPU alone, all cores): products/s of a cold
  pass (workers starting, CUDA and the model loading) and of a warm pass, mean and peak GPU
  utilisation, the GPU memory used,
  rows in = embedded + quarantined, and the job's vectors against the in-process ones.
Also runs on a CPU (smaller sizes) so that it can be tried before a GPU is lent.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.workload import IMAGE_DIM, cpu_model, paper_model, timed, write_catalog
from itemsage_core.contracts.catalog_contract import PRODUCT_ID, repeated_ids_of, validate_catalog
from itemsage_core.embedding.batch_embedder import BatchEmbedder
from itemsage_core.embedding.embed_task import embed_task, read_slices, row_group_slices
from itemsage_core.features.product_features import encode_products
from itemsage_core.model.checkpoint import read_checkpoint_manifest
from itemsage_core.model.encoder import ItemSageEncoder
from itemsage_core.model.inference import embed_features
from itemsage_core.storage.parquet_io import read_parquet, row_groups

_WORKER: dict = {}


class GpuSampler:
    """GPU utilisation (% of time a kernel ran) and memory used, sampled every 50 ms through
    NVML while a `with` block runs."""

    def __init__(self, device_index: int = 0):
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
            self._read = lambda: (
                pynvml.nvmlDeviceGetUtilizationRates(handle).gpu,
                pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20,
            )
        except Exception:  # no NVML (a CPU machine): no samples
            self._read = None

    def __enter__(self):
        if self._read:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def _loop(self):
        while not self._stop.wait(0.05):
            self.samples.append(self._read())

    def __exit__(self, *exc):
        self._stop.set()
        if self._read:
            self._thread.join()

    def summary(self) -> dict:
        if not self.samples:
            return {"gpu_util_mean_pct": None, "gpu_util_max_pct": None, "gpu_mem_max_mb": None}
        util, mem = np.array(self.samples).T
        return {
            "gpu_util_mean_pct": float(util.mean()),
            "gpu_util_max_pct": float(util.max()),
            "gpu_mem_max_mb": float(mem.max()),
        }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int, repeats: int) -> float:
    """Rate of an n x n x n matmul on random data (tf32 off for fp32: the encoder's fp32 path
    does not use it)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - started) / 1e12


def forward_pps(model, features, device, precision, cls_only, batch_size, n) -> float:
    """Products/s of embed_features (host->device copy, forward, copy back) on n products."""
    warm = np.arange(min(n, 2 * batch_size))
    embed_features(model, features, warm, batch_size, device, precision, cls_only)
    sync(device)
    _, seconds = timed(
        lambda: embed_features(
            model, features, np.arange(n), batch_size, device, precision, cls_only
        )
    )
    return n / seconds


def neighbour_overlap(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    """Mean share of each product's exact top-k neighbours (by a) that b also ranks top-k."""
    top_a = np.argsort(-(a @ a.T), axis=1)[:, 1 : k + 1]
    top_b = np.argsort(-(b @ b.T), axis=1)[:, 1 : k + 1]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(top_a, top_b)]))


def _init_worker(
    model_dir, version, device, precision, batch_size, threads, targets, run_id, repeated
):
    torch.set_num_threads(threads)
    _WORKER.update(
        embedder=BatchEmbedder.for_model(model_dir, version, batch_size, device, precision),
        targets=targets,
        run_id=run_id,
        repeated=repeated,
        started=dt.datetime.now(dt.timezone.utc),
    )


def _task(item):
    """One Spark task's work on one row-group slice (jobs/embed_catalog.py runs the same)."""
    w = _WORKER
    return embed_task(
        read_slices([item]),
        w["embedder"],
        w["targets"],
        w["run_id"],
        w["started"],
        IMAGE_DIM,
        None,
        w["repeated"],
    )


STEPS = (
    "read_row_group",
    "conform_catalog",
    "catalog_row_problems",
    "encode_products",
    "embed_features",
    "content_hashes",
    "write_data_file",
)


def task_profile(embedder: BatchEmbedder, item, targets: dict, repeated: pa.Table) -> dict:
    """Seconds in each step of one task (cProfile's cumulative time per function; the total is
    the task's wall time under the profiler)."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.runcall(
        embed_task,
        read_slices([item]),
        embedder,
        targets,
        "profile",
        dt.datetime.now(dt.timezone.utc),
        IMAGE_DIM,
        None,
        repeated,
    )
    total = time.perf_counter() - started
    stats = pstats.Stats(profiler).stats
    steps = {name: sum(v[3] for (_, _, fn), v in stats.items() if fn == name) for name in STEPS}
    return {"rows": item[3] - item[2], "total_s": total, **steps}


def job_tasks(
    groups: list,
    repeated: pa.Table,
    model_dir: Path,
    out_dir: Path,
    workers: int,
    device: str,
    precision: str,
    batch_size: int,
    cores: int,
) -> dict:
    """The job's tasks over the catalog's row groups with `workers` processes sharing the
    device (`repeated`: the ids on several rows, from the job's driver pass): a cold pass
    (workers start) and a warm pass (same workers)."""
    version = read_checkpoint_manifest(model_dir)["model_version"]
    items = row_group_slices(groups, workers)
    rows_in = sum(rows for *_, rows in groups)
    result: dict = {
        "workers": workers,
        "tasks": len(items),
        "torch_threads_per_worker": max(1, cores // workers),
    }
    passes = {}
    context = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    targets = {kind: str(out_dir / kind) for kind in ("embeddings", "quarantine")}
    with GpuSampler() as sampler:
        pool = context.Pool(
            workers,
            _init_worker,
            (
                str(model_dir),
                version,
                device,
                precision,
                batch_size,
                max(1, cores // workers),
                targets,
                f"bench-{workers}",
                repeated,
            ),
        )
        with pool:
            files = [f for described in pool.imap_unordered(_task, items) for f in described]
            passes["cold"] = (time.perf_counter() - started, sampler.summary())
            sampler.samples.clear()
            warm_started = time.perf_counter()
            again = [f for described in pool.imap_unordered(_task, items) for f in described]
            passes["warm"] = (time.perf_counter() - warm_started, sampler.summary())
    embedded = sum(f["rows"] for f in files if f["kind"] == "embeddings")
    quarantined = sum(f["rows"] for f in files if f["kind"] == "quarantine")
    result.update(
        rows_in=rows_in,
        embedded=embedded,
        quarantined=quarantined,
        counts_add_up=rows_in == embedded + quarantined,
        warm_pass_rows=sum(f["rows"] for f in again),
    )
    for name, (seconds, gpu) in passes.items():
        result[f"{name}_s"] = seconds
        result[f"{name}_pps"] = embedded / seconds
        result.update({f"{name}_{k}": v for k, v in gpu.items()})
    return result


def job_vectors(out_dir: Path, ids: pa.Array) -> np.ndarray:
    """The job's embeddings of `ids`, in that order, read back from its data files."""
    table = read_parquet(out_dir / "embeddings", ["product_id", "embedding"])
    table = table.filter(pc.is_in(table.column("product_id"), value_set=ids))
    order = pc.index_in(ids, value_set=table.column("product_id"))
    taken = table.take(order)
    return np.stack(taken.column("embedding").to_numpy(zero_copy_only=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=200_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[512, 2048, 8192])
    parser.add_argument(
        "--cpu-workers",
        type=int,
        default=os.cpu_count(),
        help="also run the tasks on the CPU alone with this many workers (0: not)",
    )
    parser.add_argument("--job-batch-size", type=int, default=512, help="the job's default")
    parser.add_argument("--precision", default="fp32", help="the job's (its default)")
    parser.add_argument("--forward-products", type=int, default=50_000)
    parser.add_argument("--out", default=str(ROOT / "bench/results"))
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report_path = out / "gpu_bench.json"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cores = os.cpu_count() or 1
    report: dict = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "cores": cores,
        "cpu_model": cpu_model(),
        "torch": torch.__version__,
        "pyarrow": pa.__version__,
        "products": args.products,
        "java": shutil.which("java"),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }

    def record(**figures) -> None:
        report.update(figures)
        report_path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        for key, value in figures.items():
            print(f"[gpu_bench {time.strftime('%H:%M:%S')}] {key} = {value}", flush=True)

    record()
    if device.type == "cuda":
        record(
            bf16_matmul_tflops=matmul_tflops(device, torch.bfloat16, 8192, 20),
            fp32_matmul_tflops=matmul_tflops(device, torch.float32, 4096, 10),
        )

    with tempfile.TemporaryDirectory(prefix="itemsage-gpu-", dir=args.workdir) as tmp:
        work = Path(tmp)
        catalog_dir = work / "catalog"
        (sample, seconds) = timed(lambda: write_catalog(args.products, catalog_dir))
        sample = validate_catalog(sample).valid
        record(catalog_written_s=seconds)
        model, vocab = paper_model(sample, work / "model")
        features, seconds = timed(lambda: encode_products(sample, vocab, IMAGE_DIM))
        record(tokenize_pps_one_thread=len(features) / seconds)

        # The forward pass alone, on the device.
        model.to(device)
        n = min(args.forward_products, len(features))
        forward = {}
        for precision in ("fp32", "bf16"):
            for cls_only in (True, False):
                for batch_size in args.batch_sizes:
                    key = f"{precision}_{'cls' if cls_only else 'full'}_b{batch_size}"
                    forward[key] = forward_pps(
                        model, features, device, precision, cls_only, batch_size, n
                    )
        record(forward_pps=forward)
        from torch.utils.flop_counter import FlopCounterMode

        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model(features.batch(np.arange(256)).to(device), cls_only=True)
        flops = counter.get_total_flops() / 256
        best = max(v for k, v in forward.items() if k.startswith("bf16_cls"))
        record(flops_per_product=flops, best_bf16_cls_forward_pps=best)
        if device.type == "cuda":
            record(bf16_cls_peak_fraction=best * flops / (report["bf16_matmul_tflops"] * 1e12))

        # Agreement with the CPU's fp32 outputs.
        check = np.arange(min(2000, len(features)))
        on_cpu = ItemSageEncoder(model.config)
        on_cpu.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
        torch.set_num_threads(cores)
        reference = embed_features(on_cpu.eval(), features, check, 512, torch.device("cpu"), "fp32")
        agreement = {}
        for precision in ("fp32", "bf16"):
            got = embed_features(model, features, check, 512, device, precision)
            cosine = np.sum(got * reference, axis=1)
            agreement[precision] = {
                "max_abs_diff": float(np.abs(got - reference).max()),
                "min_cosine": float(cosine.min()),
                "mean_cosine": float(cosine.mean()),
                "top10_overlap": neighbour_overlap(reference, got),
            }
        record(vs_cpu_fp32=agreement)

        # In-process end to end from catalog rows (one CPU thread tokenising, as one task).
        del model, on_cpu, features
        torch.set_num_threads(1)
        embedder = BatchEmbedder.for_model(
            str(work / "model"),
            read_checkpoint_manifest(work / "model")["model_version"],
            args.job_batch_size,
            str(device),
            args.precision,
        )

        def end_to_end():
            for start in range(0, sample.num_rows, 10_000):
                embedder.vectors(sample.slice(start, 10_000))

        embedder.vectors(sample.slice(0, 1000))
        sync(device)
        _, seconds = timed(end_to_end)
        record(in_process_e2e_pps_one_thread=sample.num_rows / seconds)

        # Where one task's time goes (one thread, as one task of the job).
        groups = row_groups(catalog_dir)
        repeated = repeated_ids_of(read_parquet(catalog_dir, [PRODUCT_ID]).column(PRODUCT_ID))
        item = (groups[0][0], groups[0][1], 0, min(groups[0][2], 25_000))
        targets = {kind: str(work / "profile" / kind) for kind in ("embeddings", "quarantine")}
        task_profile(embedder, (*item[:3], 2_000), targets, repeated)  # warm-up
        record(task_profile_one_thread=task_profile(embedder, item, targets, repeated))

        # The job's tasks, one to many workers sharing the device.
        ids = sample.column(PRODUCT_ID).slice(0, 1000).combine_chunks()
        expected = embedder.vectors(sample.slice(0, 1000))
        jobs = []
        runs = [(workers, str(device)) for workers in args.workers]
        if device.type == "cuda" and args.cpu_workers:  # the same machine without its GPU
            runs.append((args.cpu_workers, "cpu"))
        for workers, on in runs:
            out_dir = work / f"tables-{workers}-{on}"
            try:
                figures = job_tasks(
                    groups,
                    repeated,
                    work / "model",
                    out_dir,
                    workers,
                    on,
                    args.precision,
                    args.job_batch_size,
                    cores,
                )
            except Exception as exc:  # keep the other runs' figures
                record(**{f"job_tasks_{workers}_{on}_error": repr(exc)})
                continue
            figures["device"] = on
            got = job_vectors(out_dir, ids)
            figures["vs_in_process_min_cosine"] = float(np.sum(got * expected, axis=1).min())
            figures["vs_in_process_max_abs_diff"] = float(np.abs(got - expected).max())
            shutil.rmtree(out_dir)
            jobs.append(figures)
            record(job_tasks=jobs)

    print_table(report)


def print_table(report: dict) -> None:
    print(
        f"\n{report['device']} ({report['cores']} cores, torch {report['torch']}), "
        f"{report['products']:,} products"
    )
    for key in (
        "bf16_matmul_tflops",
        "fp32_matmul_tflops",
        "flops_per_product",
        "best_bf16_cls_forward_pps",
        "bf16_cls_peak_fraction",
        "tokenize_pps_one_thread",
        "in_process_e2e_pps_one_thread",
    ):
        if key in report:
            print(f"{key:34s}{report[key]:>14.4g}")
    for key, value in report.get("forward_pps", {}).items():
        print(f"forward {key:26s}{value:>14,.0f}")
    profile = report.get("task_profile_one_thread")
    if profile:
        print(
            f"one task, {profile['rows']:,} rows, one thread: {profile['total_s']:.2f} s; "
            + ", ".join(f"{name} {profile[name]:.2f}" for name in STEPS)
        )
    for precision, figures in report.get("vs_cpu_fp32", {}).items():
        print(f"vs CPU fp32, {precision}: " + ", ".join(f"{k} {v:.4g}" for k, v in figures.items()))
    print(
        f"{'device':>8s}{'workers':>8s}{'cold pps':>10s}{'warm pps':>10s}{'GPU util %':>11s}"
        f"{'GPU MB':>9s}{'rows ok':>8s}{'min cos':>9s}"
    )
    for job in report.get("job_tasks", []):
        util = job["warm_gpu_util_mean_pct"]
        mem = job["warm_gpu_mem_max_mb"]
        print(
            f"{job['device']:>8s}{job['workers']:>8d}{job['cold_pps']:>10,.0f}"
            f"{job['warm_pps']:>10,.0f}"
            f"{'-' if util is None else f'{util:.0f}':>11s}"
            f"{'-' if mem is None else f'{mem:.0f}':>9s}{str(job['counts_add_up']):>8s}"
            f"{job['vs_in_process_min_cosine']:>9.5f}"
        )


if __name__ == "__main__":
    main()
