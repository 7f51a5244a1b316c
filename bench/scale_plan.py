"""What a 100M- and a 1B-product surface needs per index type, computed from the figures
`bench/index_types_bench.py` measured (its JSON): shards, memory per serving replica, and build
hours on N executors.

    python bench/scale_plan.py [--results bench/results/index_types.json] [--products 1000000]
                               [--catalogs 100000000 1000000000] [--executors 10 100]
                               [--shard-size 100000]

Per type, from the measured size's rows: index bytes per vector (the memory a replica holds,
file for file) and resident bytes per vector (what loading added, allocator and library
overheads included), and the mean seconds to build, gate and write one shard of the measured
size with one core (a Spark task). A catalog of N products in shards of `--shard-size` needs
ceil(N / size) shards; a replica holding every shard needs shards x size x resident bytes;
building them with E single-core executors takes ceil(shards / E) waves of one shard's seconds.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def plan(rows: list[dict], products: int, catalogs, executors, shard_size: int) -> list[str]:
    measured = {
        r["system"].removeprefix("ours "): r
        for r in rows
        if r["products"] == products and r["system"].startswith("ours ") and r["threads"] == 1
    }
    lines = [
        "| products | index | shards | index memory per replica | resident per replica | "
        + " | ".join(f"build hours, {e} executors" for e in executors)
        + " |",
        "|---|---|---|---|---|" + "---|" * len(executors),
    ]
    for n in catalogs:
        shards = math.ceil(n / shard_size)
        for kind, r in measured.items():
            per_shard_s = r["shard_build_s"] * shard_size / (products / r["shards"])
            hours = [math.ceil(shards / e) * per_shard_s / 3600 for e in executors]
            lines.append(
                f"| {n:,} | {kind} | {shards:,} | {n * r['bytes_per_vector'] / 2**30:,.0f} GiB "
                f"| {n * r['resident_per_vector'] / 2**30:,.0f} GiB | "
                + " | ".join(f"{h:,.2f}" for h in hours)
                + " |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(ROOT / "bench" / "results" / "index_types.json"))
    parser.add_argument("--products", type=int, default=1_000_000)
    parser.add_argument("--catalogs", type=int, nargs="+", default=[100_000_000, 1_000_000_000])
    parser.add_argument("--executors", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--shard-size", type=int, default=100_000)
    args = parser.parse_args()
    rows = json.loads(Path(args.results).read_text())
    lines = plan(rows, args.products, args.catalogs, args.executors, args.shard_size)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
