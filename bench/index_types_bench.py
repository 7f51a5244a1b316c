"""Index types side by side: per type, bytes per vector, build seconds, recall@10 and queries/s
at the settings the builder tuned to served recall, beside raw hnswlib and faiss indexes over the
same vectors.

    python bench/index_types_bench.py [--products 200000 1000000] [--shards 10]
                                      [--queries 2000] [--threads 1 2] [--json OUT]

Per size: N clustered 256-d unit vectors (bench/index_store_bench.py). Ours: one surface per type
(`hnsw`, `hnsw-sq8`, `ivf-pq`), `--shards` hash shards, M 16, efConstruction 200, search settings
"auto" (ef_search / nprobe and the re-rank depth tuned so that the build serves min_recall: 0.95 for
the HNSW types, 0.90 for ivf-pq, as the gate measures it: served_recall on 1,000 of its products),
built by `itemsage build-index` on local[2]; its served recall and what tuning cost from the
manifest; then, loaded as the reader loads it, 2,000 noisy queries against exact top 10 through
`search_batch`. Raw: one hnswlib index, one faiss IndexHNSWFlat and one faiss IndexIVFPQ (4 sqrt(N)
lists, 64-byte codes; alone, and re-ranked 4x by faiss's IndexRefineFlat, which holds the float
vectors in memory) over all N vectors, built with 2 threads, each at the cheapest swept setting
reaching the same recall as our build of the matching type.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.index_store_bench import clustered_vectors, write_vectors  # noqa: E402
from bench.query_bench import K, recall, timed  # noqa: E402
from index_builder.shard_build import exact_top_k, gate_queries  # noqa: E402

# type: min_recall, as served (the gate measures the merged answers: no calibration by hand)
TYPES = {"hnsw": 0.95, "hnsw-sq8": 0.95, "ivf-pq": 0.90}
EFS = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
NPROBES = (1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256)


def ours(kind: str, vectors: np.ndarray, shards: int, work: Path, table: Path) -> dict:
    """Build the vectors as one surface of type `kind` with `itemsage build-index`; its
    manifest figures and loaded index."""
    from index_builder.index_reader import load_published

    size = -(-11 * len(vectors) // (10 * shards))
    (work / "surfaces.toml").write_text(
        f'[surfaces.bench]\nindex = "{kind}"\nshards = {shards}\ntarget_shard_size = {size}\n'
        f"M = 16\nef_construction = 200\nmin_recall = {TYPES[kind]}\n"
    )
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "itemsage_cli.main", "build-index", "--table", str(table),
         "--surfaces", str(work / "surfaces.toml"), "--out", str(work / "indexes"),
         "--master", "local[2]"],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"build-index ({kind}) failed:\n{done.stderr[-3000:]}")
    wall = time.perf_counter() - started
    index = load_published(work / "indexes", "bench")
    memory = index.manifest["memory"]
    return {
        "index": index,
        "build_s": wall,
        "bytes_per_vector": memory["bytes_per_vector"],
        "resident_per_vector": memory["resident_bytes"] / len(vectors),
        "gate_min": index.manifest["recall_at_10"]["min"],
        "served_recall": index.manifest["served"]["recall_at_10"],
        "served_stderr": index.manifest["served"]["stderr"],
        "tuning_s": index.manifest["served"]["tuning"]["seconds"],
        "shards": len(index.manifest["shards"]),
        "shard_build_s": float(np.mean([s["build_s"] for s in index.manifest["shards"]])),
        "settings": index.manifest["served"]["settings"],
    }


def reader_search(index, ids: list[str]):
    """threads -> a batch search through our reader, as row numbers of `ids`."""
    position = {p: i for i, p in enumerate(ids)}
    lookup = np.vectorize(lambda p: position.get(p, -1), otypes=[np.int64])

    def with_threads(threads: int):
        return lambda q: lookup(index.search_batch(q, K, threads=threads).ids)

    return with_threads


def raw_hnswlib(vectors: np.ndarray) -> tuple[float, int, object]:
    import hnswlib

    started = time.perf_counter()
    index = hnswlib.Index(space="ip", dim=vectors.shape[1])
    index.init_index(max_elements=len(vectors), M=16, ef_construction=200, random_seed=0)
    index.add_items(vectors, np.arange(len(vectors)), num_threads=2)
    seconds = time.perf_counter() - started
    with tempfile.NamedTemporaryFile() as f:
        index.save_index(f.name)
        size = Path(f.name).stat().st_size

    def search(ef: int, threads: int):
        def run(q):
            index.set_ef(max(ef, K))
            return index.knn_query(q, k=K, num_threads=threads)[0]

        return run

    return seconds, size, search


def raw_faiss(kind: str, vectors: np.ndarray) -> tuple[float, int, object]:
    import faiss

    faiss.omp_set_num_threads(2)
    n, dim = vectors.shape
    started = time.perf_counter()
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, 16, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 200
    else:  # "ivf-pq", or "ivf-pq-refine": re-ranked 4x from float vectors held in memory
        nlist = round(4 * math.sqrt(n))
        index = ivf = faiss.IndexIVFPQ(
            faiss.IndexFlatIP(dim), dim, nlist, 64, 8, faiss.METRIC_INNER_PRODUCT
        )
        if kind == "ivf-pq-refine":
            index = faiss.IndexRefineFlat(ivf)
            index.k_factor = 4
        sample = vectors[np.random.default_rng(0).choice(n, min(n, 50_000), replace=False)]
        index.train(sample)
    index.add(vectors)
    seconds = time.perf_counter() - started
    size = len(faiss.serialize_index(index))

    def search(setting: int, threads: int):
        def run(q):
            faiss.omp_set_num_threads(threads)
            if kind == "hnsw":
                index.hnsw.efSearch = max(setting, K)
            else:
                ivf.nprobe = setting
            return index.search(q, K)[1]

        return run

    return seconds, size, search


def cheapest(search, settings, queries, truth, threads: int, target: float) -> dict:
    """The first swept setting reaching `target` recall (else the best one): its figures."""
    best = None
    for setting in settings:
        found, qps = timed(search(setting, threads), queries)
        point = {"setting": setting, "recall": recall(found, truth), "qps": qps}
        if best is None or point["recall"] > best["recall"]:
            best = point
        if point["recall"] >= target:
            return point
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--shards", type=int, default=10)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "index_types.json"))
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="itemsage-types-bench-"))
    report = []
    for products in args.products:
        vectors = clustered_vectors(products)
        ids = [f"P{i:08d}" for i in range(products)]
        table = work / f"table-{products}"
        write_vectors(str(table), ids, vectors, ids)
        queries = gate_queries(vectors, args.queries, 0.1, seed=1)
        truth = exact_top_k(vectors, queries, K)
        rows = []
        for kind in TYPES:
            root = work / f"{kind}-{products}"
            root.mkdir(parents=True, exist_ok=True)
            built = ours(kind, vectors, args.shards, root, table)
            searcher = reader_search(built.pop("index"), ids)
            for threads in args.threads:
                found, qps = timed(searcher(threads), queries)
                rows.append({"system": f"ours {kind}", "products": products, "threads": threads,
                             "recall": recall(found, truth), "qps": qps, **built})  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
            del searcher
        raws = {"hnswlib": ("hnsw", raw_hnswlib(vectors), EFS),
                "faiss HNSWFlat": ("hnsw", raw_faiss("hnsw", vectors), EFS),
                "faiss IVFPQ": ("ivf-pq", raw_faiss("ivf-pq", vectors), NPROBES),
                "faiss IVFPQ+RefineFlat": ("ivf-pq", raw_faiss("ivf-pq-refine", vectors),
                                           NPROBES)}  # fmt: skip
        for name, (kind, (seconds, size, search), settings) in raws.items():
            for threads in args.threads:
                ours_recall = next(
                    r["recall"] for r in rows
                    if r["system"] == f"ours {kind}" and r["threads"] == threads
                )  # fmt: skip
                point = cheapest(search, settings, queries, truth, threads, ours_recall)
                rows.append({"system": name, "products": products, "threads": threads,
                             "build_s": seconds, "bytes_per_vector": size / products,
                             **point})  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
        report.extend(rows)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print("\n| products | system | threads | bytes/vector | build s | recall@10 | q/s |")
    print("|---|---|---|---|---|---|---|")
    for r in report:
        print(f"| {r['products']:,} | {r['system']} | {r['threads']} | "
              f"{r['bytes_per_vector']:.0f} | {r['build_s']:.1f} | {r['recall']:.3f} | "
              f"{r['qps']:,.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
