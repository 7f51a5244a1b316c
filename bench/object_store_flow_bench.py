"""The whole flow with every artefact on local paths vs on an S3 API (issue 33).

    python bench/object_store_flow_bench.py [--products 5000] [--workdir DIR] [--json OUT]

A synthetic world (catalog and engagement log) is written locally and copied to `s3://` (moto's
S3 server on 127.0.0.1 in this process: an in-memory Python server, slower than a real store).
Then the same commands run, each as a fresh `itemsage` process on local[2], once with local paths
and once with `s3://` URIs only: train in one process (a small model), train on Spark in 2
processes (prepared data and states beside the model), validate on Spark, embed, evaluate,
build-index, and a query with the catalog's titles. Prints the seconds of each command on both
and their ratio.
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

import boto3
from moto.server import ThreadedMotoServer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SURFACES = "[surfaces.home]\nshards = 2\n"
S3 = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1"}
TINY = (
    "--epochs", "1", "--batch-size", "128", "--d-model", "64", "--ffn-dim", "128",
    "--hash-buckets", "20000", "--vocab", "5000,5000,2000",
)  # fmt: skip


def commands(world: str, out: str, surfaces: str, product: str) -> list[tuple[str, list[str]]]:
    """(step, arguments) of the flow, every artefact under `out`, the inputs under `world`."""
    catalog, log, model = f"{world}/catalog", f"{world}/engagements", f"{out}/models/m1"
    table, index, spark = f"{out}/embeddings", f"{out}/indexes", ("--master", "local[2]")
    return [
        ("train", ["train", "--catalog", catalog, "--engagements", log, "--out", model, *TINY]),
        (
            "train-2proc",
            ["train", "--catalog", catalog, "--engagements", log, "--out", f"{model}-2proc",
             *TINY, *spark, "--num-processes", "2", "--checkpoint-every", "20"],
        ),
        ("validate", ["validate", "--catalog", catalog, *spark]),
        ("embed", ["embed", "--catalog", catalog, "--model", model, "--table", table, *spark]),
        ("evaluate", ["evaluate", "--model", model, "--catalog", catalog, "--engagements", log]),
        (
            "build-index",
            ["build-index", "--table", table, "--surfaces", surfaces, "--out", index, *spark],
        ),
        (
            "query",
            ["query", "--index", index, "--surface", "home", "--product-id", product,
             "--catalog", catalog, "--show", "title"],
        ),
    ]  # fmt: skip


def run_flow(steps, env: dict, cwd: Path) -> dict[str, float]:
    seconds = {}
    for name, args in steps:
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "itemsage_cli.main", *args],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
        )
        seconds[name] = round(time.perf_counter() - started, 2)
        if done.returncode:
            raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
        print(f"  {name}: {seconds[name]:.1f} s", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=5000)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    from itemsage_core.storage.parquet_io import write_parquet_dataset
    from itemsage_core.synthetic.world import WorldConfig, generate_world

    work = Path(args.workdir or tempfile.mkdtemp(prefix="itemsage-store-flow-"))
    world = generate_world(WorldConfig(products=args.products, seed=3))
    write_parquet_dataset(world.catalog, work / "world" / "catalog", rows_per_file=2000)
    write_parquet_dataset(world.engagements, work / "world" / "engagements")
    (work / "surfaces.toml").write_text(SURFACES)
    product = world.catalog.column("product_id")[0].as_py()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = ThreadedMotoServer("127.0.0.1", port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        env = {**os.environ, **S3, "AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true"}
        os.environ.update(S3)  # boto3's credentials, as the commands get them
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        client.create_bucket(Bucket="lake")
        for file in sorted((work / "world").rglob("*.parquet")):
            client.upload_file(str(file), "lake", f"world/{file.relative_to(work / 'world')}")
        results = {}
        for name, world_at, out in (
            ("local", str(work / "world"), str(work / "out")),
            ("s3", "s3://lake/world", "s3://lake/out"),
        ):
            print(f"{name}:", flush=True)
            cwd = work / f"cwd-{name}"
            cwd.mkdir(exist_ok=True)
            flow_env = {**env, "ITEMSAGE_CACHE_DIR": str(work / f"cache-{name}")}
            steps = commands(world_at, out, str(work / "surfaces.toml"), product)
            results[name] = run_flow(steps, flow_env, cwd)
    finally:
        server.stop()
    print(f"\n{'step':<12} {'local s':>8} {'s3 s':>8} {'s3/local':>9}")
    for step in results["local"]:
        local, remote = results["local"][step], results["s3"][step]
        print(f"{step:<12} {local:>8.1f} {remote:>8.1f} {remote / local:>9.2f}")
    totals = {k: round(sum(v.values()), 1) for k, v in results.items()}
    print(f"{'total':<12} {totals['local']:>8.1f} {totals['s3']:>8.1f}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"products": args.products, "seconds": results}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
