"""The index job and the first query with INDEX_ROOT on a local path vs on an S3 API.

    python bench/index_store_bench.py [--products 100000] [--workdir DIR] [--json OUT]

A Delta table of N unit vectors (256-d, drawn around 200 centres, so that HNSW meets its recall
gate as on real embeddings) is written locally; then, each as a fresh `itemsage` process on
local[2]: `build-index` into a local root and into `s3://` (moto's S3 server on 127.0.0.1, the
API the tests use: an in-memory Python server, slower than a real store), and `query` with an
empty cache (the first query: download, checksums, load) and again with the cache filled.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
SURFACES = "[surfaces.all]\nshards = 2\nM = 16\nef_construction = 200\nef_search = 64\n"
S3 = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_REGION": "us-east-1",
}


def write_table(uri: str, products: int, dim: int = 256, seed: int = 0) -> str:
    """A Delta table of `products` unit vectors of one model; the first product's id."""
    from deltalake import write_deltalake

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((200, dim)).astype(np.float32)
    vectors = centres[rng.integers(0, 200, products)] + 0.6 * rng.standard_normal(
        (products, dim)
    ).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"P{i:08d}" for i in range(products)]
    table = pa.table(
        {
            "product_id": ids,
            "embedding": pa.array(list(vectors), pa.list_(pa.float32())),
            "model_version": ["bench"] * products,
        }
    )
    write_deltalake(uri, table, mode="overwrite")
    return ids[0]


def moto_server() -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    return server, f"http://127.0.0.1:{port}"


def timed(args: list[str], env: dict) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "itemsage_cli.main", *args], env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args[:1])} failed:\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "index_store.json"))
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="itemsage-store-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    table = str(work / "embeddings")
    first_id = write_table(table, args.products)
    (work / "surfaces.toml").write_text(SURFACES)
    server, endpoint = moto_server()
    try:
        import boto3

        os.environ.update(S3)
        env = {**os.environ, "AWS_ENDPOINT_URL": endpoint}
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
            Bucket="bench"
        )
        rows = []
        for name, root in (("local", str(work / "indexes")), ("s3", "s3://bench/indexes")):
            build_s, _ = timed(
                ["build-index", "--table", table, "--surfaces", str(work / "surfaces.toml"),
                 "--out", root, "--master", "local[2]"],
                env,
            )  # fmt: skip
            cache = work / f"cache-{name}"
            query = ["query", "--index", root, "--surface", "all", "--product-id", first_id,
                     "--json", "--cache-dir", str(cache)]  # fmt: skip
            first_s, answer = timed(query, env)
            again_s, again = timed(query, env)
            assert json.loads(answer) == json.loads(again)
            rows.append(
                {
                    "root": name,
                    "products": args.products,
                    "build_index_s": round(build_s, 1),
                    "first_query_s": round(first_s, 2),
                    "cached_query_s": round(again_s, 2),
                    "answer": json.loads(answer),
                }
            )
    finally:
        server.terminate()
        server.wait()
    assert rows[0]["answer"] == rows[1]["answer"], "local and s3 builds answer differently"
    print("root  | products | build-index s | first query s | cached query s")
    for row in rows:
        print(
            f"{row['root']:5} | {row['products']} | {row['build_index_s']} | "
            f"{row['first_query_s']} | {row['cached_query_s']}"
        )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(
        json.dumps([{k: v for k, v in r.items() if k != "answer"} for r in rows], indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
