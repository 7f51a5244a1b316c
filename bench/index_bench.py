"""Published surface indexes against their peers on the same vectors.

For each surface of an index root: our sharded hnswlib build (seconds from its manifest; recall@10
and single-thread queries/s through `ShardedIndex.search`, the path `itemsage query` uses), one
raw hnswlib index over all the surface's vectors (`add_items` seconds with every core), and faiss
`IndexHNSWFlat` with the same M / efConstruction / efSearch. Ground truth: exact faiss search.
Queries: surface vectors moved by noise (as the recall gate does), never the exact stored points.

    python bench/index_bench.py --index INDEX_ROOT [--queries 1000] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from index_builder.index_reader import load_published
from index_builder.index_types.hnsw import new_hnsw_index
from index_builder.layout import current_build_id
from index_builder.partitioning import vectors_of
from index_builder.shard_build import exact_top_k, gate_queries, recall_at_k
from itemsage_core.embedding.embeddings_table import read_table
from itemsage_core.storage.store import Store


def surface_vectors(index) -> tuple[pa.Array, np.ndarray]:
    """The surface's ids and vectors, read from the table version the build pinned."""
    table = index.manifest["table"]
    ids = pa.array(np.concatenate([shard.ids for shard in index.ids]))
    rows = read_table(table["uri"], version=table["version"], columns=["product_id", "embedding"])
    rows = rows.filter(pc.is_in(rows.column("product_id"), value_set=ids))
    return rows.column("product_id").combine_chunks(), vectors_of(rows.column("embedding"))


def timed_queries(search, queries: np.ndarray) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    found = np.array([search(q) for q in queries])
    return found, len(queries) / (time.perf_counter() - started)


def bench_surface(root: str, surface: str, queries: int, seed: int = 0) -> dict:
    import faiss

    index = load_published(root, surface)
    params = index.manifest["params"]
    ids, vectors = surface_vectors(index)
    position = {pid: i for i, pid in enumerate(ids.to_pylist())}
    q = gate_queries(vectors, queries, params["query_noise"], seed)
    exact = exact_top_k(vectors, q, 10)

    ours, ours_qps = timed_queries(lambda v: [position[pid] for pid, _ in index.search(v, 10)], q)
    cores = os.cpu_count() or 1
    raw = new_hnsw_index(
        vectors.shape[1], len(vectors), params["M"], params["ef_construction"], params["seed"]
    )
    started = time.perf_counter()
    raw.add_items(vectors, np.arange(len(vectors)), num_threads=cores)
    raw_s = time.perf_counter() - started
    raw.set_ef(params["ef_search"])
    raw_found, raw_qps = timed_queries(lambda v: raw.knn_query(v, k=10, num_threads=1)[0][0], q)

    flat = faiss.IndexHNSWFlat(vectors.shape[1], params["M"], faiss.METRIC_INNER_PRODUCT)
    flat.hnsw.efConstruction = params["ef_construction"]
    faiss.omp_set_num_threads(cores)
    started = time.perf_counter()
    flat.add(vectors)
    faiss_s = time.perf_counter() - started
    flat.hnsw.efSearch = params["ef_search"]
    faiss.omp_set_num_threads(1)
    faiss_found, faiss_qps = timed_queries(lambda v: flat.search(v[None, :], 10)[1][0], q)
    faiss.omp_set_num_threads(cores)

    seconds = index.manifest["seconds"]
    return {
        "surface": surface,
        "build_id": current_build_id(root, surface),
        "products": len(vectors),
        "shards": params["shards"],
        "sharding": params["sharding"],
        "M": params["M"],
        "ef_construction": params["ef_construction"],
        "ef_search": params["ef_search"],
        "job_build_stage_s": seconds["build_s"],
        "job_shard_add_items_s": seconds["add_items_s"],
        "recall_at_10": recall_at_k(vectors, q, ours, exact),
        "qps": ours_qps,
        "raw_hnswlib_add_items_s": raw_s,
        "raw_hnswlib_recall_at_10": recall_at_k(vectors, q, raw_found, exact),
        "raw_hnswlib_qps": raw_qps,
        "faiss_hnsw_build_s": faiss_s,
        "faiss_hnsw_recall_at_10": recall_at_k(vectors, q, faiss_found, exact),
        "faiss_hnsw_qps": faiss_qps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", required=True, help="INDEX_ROOT written by build-index")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--json", default=None, help="write the results here too")
    args = parser.parse_args()
    surfaces = [s for s in Store(args.index).names("") if current_build_id(args.index, s)]
    results = [bench_surface(args.index, s, args.queries) for s in surfaces]
    columns = [
        ("surface", "{}"),
        ("products", "{}"),
        ("shards", "{}"),
        ("job_build_stage_s", "{:.1f}"),
        ("recall_at_10", "{:.3f}"),
        ("qps", "{:.0f}"),
        ("raw_hnswlib_add_items_s", "{:.1f}"),
        ("raw_hnswlib_recall_at_10", "{:.3f}"),
        ("raw_hnswlib_qps", "{:.0f}"),
        ("faiss_hnsw_build_s", "{:.1f}"),
        ("faiss_hnsw_recall_at_10", "{:.3f}"),
        ("faiss_hnsw_qps", "{:.0f}"),
    ]
    print(" | ".join(name for name, _ in columns))
    for row in results:
        print(" | ".join(fmt.format(row[name]) for name, fmt in columns))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
