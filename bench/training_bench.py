"""Training benchmark: in one process vs prepared on Spark + 1 process vs 2 processes
(`make bench-training`).

    python bench/training_bench.py [--products 20000 200000] [--max-steps 60] [--workdir DIR]
                                   [--out bench/results/training.json]

For each size: a synthetic world (`itemsage generate`, 5 engagements per product), then the same
`itemsage train` (paper-shaped encoder, batch 256, --max-steps bounded) three ways, each as its own
command:
- in-process: the whole catalog and log in one process, 2 torch threads;
- spark-1: `--master local[2] --num-processes 1 --conf spark.task.cpus=2` (data prepared on
  Spark, one training process with 2 threads);
- spark-2: `--master local[2] --num-processes 2` (two training processes, 1 thread each).
Each run's peak resident memory is that of its whole process tree (the CLI, Spark's JVM, the
Python workers, torchrun and its processes), sampled every 0.2 s from /proc; examples/s is the
trainer's (examples seen by all processes / training seconds); the held-out Recall@10 is the
run's own (index of every product up to 100k). Prints a table; writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = {
    "in-process": [],
    "spark-1": ["--master", "local[2]", "--num-processes", "1", "--conf", "spark.task.cpus=2"],
    "spark-2": ["--master", "local[2]", "--num-processes", "2"],
}


def tree_rss(root: int) -> dict[str, float]:
    """Resident memory (MB) of `root` and every descendant, summed per kind of process."""
    children: dict[int, list[int]] = {}
    rss: dict[int, tuple[str, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            status = Path(f"/proc/{entry}/status").read_text()
            command = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss[int(entry)] = (_kind(command), int(line.split()[1]))
    total: dict[str, float] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        kind, kb = rss.get(pid, ("gone", 0))
        total[kind] = total.get(kind, 0) + kb / 1024
        todo += children.get(pid, [])
    return total


def _kind(command: list[bytes]) -> str:
    """A short name for a process of the tree, from its command line."""
    text = b" ".join(command).decode(errors="replace")
    for marker, kind in (
        ("java", "spark-jvm"),
        ("torch_run_process_wrapper", "torchrun-wrapper"),
        ("torch.distributed.run", "torchrun-agent"),
        ("pyspark.daemon", "pyspark-worker"),
        ("pyspark/daemon", "pyspark-worker"),
        ("itemsage_cli.main", "cli-driver"),
    ):
        if marker in text:
            return kind
    return "training-process" if "train.py" in text else text[:40]


def run_measured(command: list[str], log: Path) -> tuple[float, float, dict]:
    """Run `command`; returns (seconds, peak RSS of its process tree in MB, that peak's split
    by kind of process)."""
    started = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        peak, split = 0.0, {}

        def sample():
            nonlocal peak, split
            while process.poll() is None:
                now = tree_rss(process.pid)
                if sum(now.values()) > peak:
                    peak, split = sum(now.values()), now
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        process.wait()
        sampler.join()
    if process.returncode:
        raise SystemExit(f"{' '.join(command[3:5])} failed; see {log}")
    return time.perf_counter() - started, peak, split


def itemsage(*args: str) -> list[str]:
    return [sys.executable, "-m", "itemsage_cli.main", *args]


def bench_size(products: int, max_steps: int, workdir: Path, progress) -> dict:
    world = workdir / f"world-{products}"
    if not (world / "engagements").exists():
        progress(f"{products} products: generating the world")
        subprocess.run(
            itemsage("generate", "--products", str(products), "--out", str(world)),
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
    results = {"products": products, "engagements": products * 5, "max_steps": max_steps}
    for mode, extra in MODES.items():
        progress(f"{products} products: train {mode}")
        out = workdir / f"model-{products}-{mode}"
        summary_file = workdir / f"summary-{products}-{mode}.json"
        command = itemsage(
            "train",
            "--catalog",
            str(world / "catalog"),
            "--engagements",
            str(world / "engagements"),
            "--out",
            str(out),
            "--max-steps",
            str(max_steps),
            "--summary-json",
            str(summary_file),
            *extra,
        )
        seconds, peak, split = run_measured(command, workdir / f"train-{products}-{mode}.log")
        summary = json.loads(summary_file.read_text())
        last = summary["training"]["history"][-1]
        results[mode] = {
            "seconds": seconds,
            "peak_rss_tree_mb": peak,
            "peak_split_mb": {k: round(v) for k, v in sorted(split.items()) if v >= 1},
            "examples_per_s": last["examples_per_s"],
            "steps": summary["training"]["steps"],
            "final_loss": last["loss"],
            "recall_at_10": summary["heldout"]["overall"],
            "peak_rss_mb_per_process": summary.get("peak_rss_mb_per_process"),
            "stages": summary.get("stages"),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--products", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--max-steps", type=int, default=60)
    parser.add_argument(
        "--workdir", type=Path, default=ROOT / "bench" / "results" / "training-work"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "training.json")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)

    def progress(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    sizes = [bench_size(n, args.max_steps, args.workdir, progress) for n in args.products]
    print(
        f"{'products':>9} {'mode':<11} {'peak tree MB':>12} {'examples/s':>10} "
        f"{'recall@10':>9} {'seconds':>8}"
    )
    for size in sizes:
        for mode in MODES:
            r = size[mode]
            print(
                f"{size['products']:>9} {mode:<11} {r['peak_rss_tree_mb']:>12.0f} "
                f"{r['examples_per_s']:>10.0f} {r['recall_at_10']:>9.4f} {r['seconds']:>8.0f}"
            )
    if len(sizes) > 1:
        first, last = sizes[0], sizes[-1]
        for mode in MODES:
            ratio = last[mode]["peak_rss_tree_mb"] / first[mode]["peak_rss_tree_mb"]
            print(
                f"peak memory {last['products']} vs {first['products']} products, {mode}: "
                f"{ratio:.2f}x"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"sizes": sizes}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
