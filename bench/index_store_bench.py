"""The index job and the first query with INDEX_ROOT on a local path vs on an S3 API.

    python bench/index_store_bench.py [--products 100000] [--workdir DIR] [--json OUT]

A Delta table of N unit vectors (256-d, drawn around 200 centres, so that HNSW meets its recall
gate as on real embeddings) is written locally; then, each as a fresh `itemsage` process on
local[2]: `build-index` into a local root and into `s3://` (moto's S3 server on 127.0.0.1 in
this process, the API the tests use: an in-memory Python server, slower than a real store), and
`query` with an empty cache (the first query: download, checksums, load) and again with the
cache filled. Each root is built and queried `--rounds` times, alternating, and the median kept.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from moto.server import ThreadedMotoServer

ROOT = Path(__file__).resolve().parents[1]
SURFACES = "[surfaces.all]\nshards = 2\nM = 16\nef_construction = 200\nef_search = 64\n"
# The build loaded with an empty cache, timed inside a fresh process (no interpreter start-up).
LOAD = """
import json, sys, time
from index_builder.build_files import manifest_files
from index_builder.index_reader import load_published
started = time.perf_counter()
index = load_published(sys.argv[1], "all", cache_dir=sys.argv[2])
print(json.dumps({"load_s": time.perf_counter() - started,
                  "build_mb": sum(d["bytes"] for _, d in manifest_files(index.manifest)) / 2**20}))
"""
S3 = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_REGION": "us-east-1",
}


def clustered_vectors(n: int, dim: int = 256, seed: int = 0) -> np.ndarray:
    """`n` unit vectors drawn around 200 centres (HNSW meets its recall gate on them as on real
    embeddings; uniform random 256-d vectors are its worst case)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).standard_normal((200, dim)).astype(np.float32)
    vectors = centres[rng.integers(0, 200, n)] + 0.6 * rng.standard_normal((n, dim)).astype(
        np.float32
    )
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def write_vectors(uri: str, ids: list[str], vectors: np.ndarray, hashes: list[str]) -> None:
    """An embeddings table version (one model) of these products, replacing the table's rows."""
    from deltalake import write_deltalake

    table = pa.table(
        {
            "product_id": ids,
            "embedding": pa.FixedSizeListArray.from_arrays(
                pa.array(vectors.ravel(), pa.float32()), vectors.shape[1]
            ).cast(pa.list_(pa.float32())),
            "model_version": ["bench"] * len(ids),
            "content_hash": hashes,
        }
    )
    write_deltalake(uri, table, mode="overwrite")


def write_table(uri: str, products: int) -> str:
    """A Delta table of `products` clustered unit vectors; the first product's id."""
    ids = [f"P{i:08d}" for i in range(products)]
    write_vectors(uri, ids, clustered_vectors(products), ids)
    return ids[0]


def timed(args: list[str], env: dict) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "itemsage_cli.main", *args], env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args[:1])} failed:\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def bench_root(root: str, table: str, work: Path, product: str, env: dict, round_: int) -> dict:
    """One build into `root`, then the query command with an empty cache and with it filled,
    and the build loaded by a fresh process with an empty cache (download, checksums, load),
    timed inside that process."""
    build_s, _ = timed(
        ["build-index", "--table", table, "--surfaces", str(work / "surfaces.toml"),
         "--out", root, "--master", "local[2]"],
        env,
    )  # fmt: skip
    cache = work / f"cache-{round_}-{root.split(':')[0]}"
    query = ["query", "--index", root, "--surface", "all", "--product-id", product, "--json",
             "--cache-dir", str(cache)]  # fmt: skip
    first_s, answer = timed(query, env)
    again_s, again = timed(query, env)
    assert json.loads(answer) == json.loads(again)
    loaded = subprocess.run(
        [sys.executable, "-c", LOAD, root, str(work / f"load-{round_}-{root.split(':')[0]}")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return {
        "build_index_s": build_s,
        "first_query_s": first_s,
        "cached_query_s": again_s,
        **json.loads(loaded.stdout),
        "answer": json.loads(answer),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "index_store.json"))
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="itemsage-store-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    table = str(work / "embeddings")
    first_id = write_table(table, args.products)
    (work / "surfaces.toml").write_text(SURFACES)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the server's request log
    server = ThreadedMotoServer("127.0.0.1", port, verbose=False)  # in this process, a thread
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        import boto3

        os.environ.update(S3)
        env = {**os.environ, "AWS_ENDPOINT_URL": endpoint}
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
            Bucket="bench"
        )
        runs = {"local": [], "s3": []}
        roots = {"local": str(work / "indexes"), "s3": "s3://bench/indexes"}
        for round_ in range(args.rounds):
            for name in sorted(roots, reverse=bool(round_ % 2)):  # alternate the order
                runs[name].append(bench_root(roots[name], table, work, first_id, env, round_))
    finally:
        server.stop()
    answers = {name: [r.pop("answer") for r in rows] for name, rows in runs.items()}
    assert all(a == answers["local"][0] for a in answers["local"] + answers["s3"]), (
        "local and s3 builds answer differently"
    )
    rows = [
        {"root": name, "products": args.products, "rounds": args.rounds}
        | {key: float(np.median([r[key] for r in rows])) for key in rows[0]}
        for name, rows in runs.items()
    ]
    print("root  | products | build-index s | first query s | cached query s | load s | MB")
    for row in rows:
        print(
            f"{row['root']:5} | {row['products']} | {row['build_index_s']:.1f} | "
            f"{row['first_query_s']:.2f} | {row['cached_query_s']:.2f} | {row['load_s']:.2f} | "
            f"{row['build_mb']:.0f}"
        )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
