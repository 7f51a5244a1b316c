"""A nightly index refresh: `build-index --incremental` vs a full rebuild, after 1% churn.

    python bench/refresh_bench.py [--products 200000 1000000] [--workdir DIR] [--json OUT]

Per size: a Delta table of N clustered 256-d unit vectors, one surface in hash shards of the
default target size (100k), M 16 / efConstruction 200 / efSearch 64, built in full; then the
night's churn (1% of the products touched: 0.5% changed vectors and content, 0.25% removed,
0.25% new), and on the new version, each as a fresh `itemsage build-index` on local[2]: the
incremental refresh of the published build, and a full build into another root. Recall@10 of
both published builds: served recall (the gate's measure) on 1,000 of their products; their
product sets are compared.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.index_store_bench import clustered_vectors, write_vectors
from index_builder.index_reader import load_published
from index_builder.served_recall import draw, served

SURFACES = "[surfaces.all]\nM = 16\nef_construction = 200\nef_search = 64\n"


def build(table: str, root: Path, work: Path, *extra: str) -> tuple[float, dict]:
    """One `itemsage build-index` run: its wall seconds and the surface's summary."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "itemsage_cli.main", "build-index", "--table", table,
         "--surfaces", str(work / "surfaces.toml"), "--out", str(root), "--master", "local[2]",
         *extra],
        capture_output=True, text=True,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"build-index failed:\n{done.stderr[-3000:]}")
    return seconds, json.loads(done.stdout)["surfaces"]["all"]


def recall(root: Path, queries: int = 1000) -> float:
    """The published build's served recall@10 (the gate's measure) on `queries` products."""
    index = load_published(root, "all")
    return served(index, draw(index, queries, seed=1))[0].recall


def bench(products: int, work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    (work / "surfaces.toml").write_text(SURFACES)
    table = str(work / "embeddings")
    ids = [f"P{i:08d}" for i in range(products)]
    vectors = clustered_vectors(products)
    hashes = list(ids)
    write_vectors(table, ids, vectors, hashes)
    first_s, _ = build(table, work / "nightly", work)

    rng = np.random.default_rng(1)
    k = products // 400  # 0.25%
    picked = rng.permutation(products)
    removed, changed = picked[:k], picked[k : 3 * k]
    vectors[changed] = clustered_vectors(len(changed), seed=2)
    for i in changed:
        hashes[i] = f"{ids[i]}-2"
    keep = np.setdiff1d(np.arange(products), removed)
    new_ids = [f"N{i:08d}" for i in range(k)]
    ids = [ids[i] for i in keep] + new_ids
    vectors = np.concatenate([vectors[keep], clustered_vectors(k, seed=3)])
    hashes = [hashes[i] for i in keep] + new_ids
    write_vectors(table, ids, vectors, hashes)

    incremental_s, incremental = build(table, work / "nightly", work, "--incremental")
    full_s, full = build(table, work / "full", work)
    sets = [
        {p for shard in load_published(root, "all").ids for p in shard.ids.tolist()}
        for root in (work / "nightly", work / "full")
    ]
    return {
        "products": products,
        "touched": 4 * k,
        "first_build_s": first_s,
        "incremental_s": incremental_s,
        "full_s": full_s,
        "speedup": full_s / incremental_s,
        "incremental_mode": incremental.get("mode"),
        "incremental_gate_min": incremental["recall_at_10"]["min"],
        "full_gate_min": full["recall_at_10"]["min"],
        "incremental_recall_at_10": recall(work / "nightly"),
        "full_recall_at_10": recall(work / "full"),
        "same_products": sets[0] == sets[1] == set(ids),
        "tombstones": incremental.get("lineage", {}).get("tombstones"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "refresh.json"))
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="itemsage-refresh-bench-"))
    rows = []
    for products in args.products:
        rows.append(bench(products, work / str(products)))
        row = rows[-1]
        print(
            f"{products}: incremental {row['incremental_s']:.1f} s vs full {row['full_s']:.1f} s "
            f"({row['speedup']:.1f}x); recall@10 {row['incremental_recall_at_10']:.3f} vs "
            f"{row['full_recall_at_10']:.3f}; same products: {row['same_products']}",
            flush=True,
        )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
