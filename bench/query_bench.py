"""Batch queries through our reader vs one faiss HNSW index and one hnswlib index, at equal
recall@10; and the neighbours job vs a plain in-process loop over the same build.

    python bench/query_bench.py [--products 100000 1000000] [--shards 10] [--queries 2000]
                                [--threads 1 2] [--neighbours 20000] [--json OUT]

Per size: N clustered 256-d unit vectors (bench/index_store_bench.py), built three ways with M 16
and efConstruction 200: our build (`--shards` hash shards, `itemsage build-index` on local[2]),
one hnswlib index and one faiss IndexHNSWFlat. Queries: noisy copies of
indexed vectors; truth: exact inner-product top 10. For each system and thread count, efSearch
is swept and recall@10 and queries/s (the whole batch in one call: `search_batch`, hnswlib
`knn_query(num_threads)`, faiss `search` under `omp_set_num_threads`) are measured; the table
gives, for each recall target, the queries/s of the cheapest setting that reaches it.

The neighbours part runs `itemsage neighbours` (local[2]) on the first `--neighbours` products'
build and the same work as a Python loop of `ShardedIndex.search` calls, products/s each.
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

from bench.index_store_bench import clustered_vectors
from index_builder.shard_build import exact_top_k, gate_queries

EFS = (10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256)
TARGETS = (0.9, 0.95, 0.99)
K = 10


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth)]))


def timed(search, queries: np.ndarray) -> tuple[np.ndarray, float]:
    search(queries[:50])  # warm up
    started = time.perf_counter()
    found = search(queries)
    return found, len(queries) / (time.perf_counter() - started)


def ours(vectors: np.ndarray, shards: int, work: Path):
    """Our build of the vectors in `shards` hash shards by `itemsage build-index` (local[2]),
    loaded as a reader loads it; its search."""
    from bench.index_store_bench import write_vectors
    from index_builder.index_reader import load_published

    ids = [f"P{i:08d}" for i in range(len(vectors))]
    write_vectors(str(work / "embeddings"), ids, vectors, ids)
    size = -(-11 * len(vectors) // (10 * shards))  # room for the hash's unevenness
    (work / "surfaces.toml").write_text(
        f"[surfaces.bench]\nshards = {shards}\ntarget_shard_size = {size}\n"
        "M = 16\nef_construction = 200\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "itemsage_cli.main", "build-index", "--table",
         str(work / "embeddings"), "--surfaces", str(work / "surfaces.toml"), "--out",
         str(work / "indexes"), "--master", "local[2]"],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"build-index failed:\n{done.stderr[-3000:]}")
    index = load_published(work / "indexes", "bench")
    position = {p: i for i, p in enumerate(ids)}
    lookup = np.vectorize(lambda p: position.get(p, -1), otypes=[np.int64])

    def search(ef: int, threads: int):
        def run(q):
            for entry in index.manifest["shards"]:
                entry["search"]["ef_search"] = ef
            return lookup(index.search_batch(q, K, threads=threads).ids)

        return run

    return index, search


def hnswlib_index(vectors: np.ndarray, threads: int):
    import hnswlib

    index = hnswlib.Index(space="ip", dim=vectors.shape[1])
    index.init_index(max_elements=len(vectors), M=16, ef_construction=200, random_seed=0)
    index.add_items(vectors, np.arange(len(vectors)), num_threads=threads)

    def search(ef: int, threads: int):
        def run(q):
            index.set_ef(max(ef, K))
            return index.knn_query(q, k=K, num_threads=threads)[0]

        return run

    return search


def faiss_index(vectors: np.ndarray):
    import faiss

    index = faiss.IndexHNSWFlat(vectors.shape[1], 16, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 200
    index.add(vectors)

    def search(ef: int, threads: int):
        def run(q):
            faiss.omp_set_num_threads(threads)
            index.hnsw.efSearch = max(ef, K)
            return index.search(q, K)[1]

        return run

    return search


def sweep(name: str, search, queries, truth, threads: int) -> list[dict]:
    points = []
    for ef in EFS:
        found, qps = timed(search(ef, threads), queries)
        points.append({"system": name, "threads": threads, "ef": ef, "qps": qps,
                       "recall": recall(found, truth)})  # fmt: skip
        if points[-1]["recall"] >= 0.995:
            break
    return points


def at_targets(points: list[dict]) -> dict:
    """Per recall target, the best queries/s among the settings reaching it."""
    return {
        str(t): max((p["qps"] for p in points if p["recall"] >= t), default=None) for t in TARGETS
    }


def neighbours_bench(index_root: Path, index, products: int, work: Path) -> dict:
    """`itemsage neighbours` on the build vs a Python loop of single searches, products/s."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "itemsage_cli.main", "neighbours", "--index", str(index_root),
         "--surface", "bench", "--out", str(work / "neighbours"), "--master", "local[2]"],
        capture_output=True, text=True,
    )  # fmt: skip
    job_s = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    ids = [p for shard in index.ids for p in shard.ids.tolist()][:2000]
    started = time.perf_counter()
    for pid in ids:
        index.search(index.vector_of(pid), K, exclude=pid)
    loop_rate = len(ids) / (time.perf_counter() - started)
    return {"products": products, "job_s": job_s, "job_products_per_s": products / job_s,
            "loop_products_per_s": loop_rate}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--shards", type=int, default=10)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--neighbours", type=int, default=100_000)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "query.json"))
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="itemsage-query-bench-"))
    report = {"sizes": [], "neighbours": None}
    for products in args.products:
        vectors = clustered_vectors(products)
        queries = gate_queries(vectors, args.queries, 0.1, seed=1)
        truth = exact_top_k(vectors, queries, K)
        root = work / f"ours-{products}"
        root.mkdir(parents=True, exist_ok=True)
        index, our_search = ours(vectors, args.shards, root)
        systems = {"ours": our_search, "hnswlib": hnswlib_index(vectors, max(args.threads)),
                   "faiss": faiss_index(vectors)}  # fmt: skip
        points = [
            p
            for threads in args.threads
            for name, search in systems.items()
            for p in sweep(name, search, queries, truth, threads)
        ]
        best = {
            f"{name}/{threads}": at_targets(
                [p for p in points if p["system"] == name and p["threads"] == threads]
            )
            for threads in args.threads
            for name in systems
        }
        report["sizes"].append({"products": products, "shards": len(index.indexes),
                                "points": points, "best_qps": best})  # fmt: skip
        for threads in args.threads:
            line = ", ".join(
                f"{name} " + " / ".join(
                    "-" if best[f"{name}/{threads}"][str(t)] is None
                    else f"{best[f'{name}/{threads}'][str(t)]:.0f}" for t in TARGETS
                )
                for name in systems
            )  # fmt: skip
            print(f"{products} products, {threads} thread(s), q/s at recall@10 "
                  f"{'/'.join(map(str, TARGETS))}: {line}", flush=True)  # fmt: skip
        if products == args.neighbours:
            report["neighbours"] = neighbours_bench(root / "indexes", index, products, root)
            print(f"neighbours: {report['neighbours']}", flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
