"""Real-catalog quality: a model trained on the catalog alone against TF-IDF and random neighbours.

    python bench/catalog_quality.py [--catalog ../shared/data/flipkart_products.parquet]
        [--mapping conf/mappings/flipkart.toml] [--label-column product_type]
        [--sizes demo paper] [--workdir DIR] [--out bench/results/catalog_quality.json]

For each model size (the demo's and the paper's) and each input set (every mapped text feature,
and the label's own column withheld from training and evaluation), runs the very commands a user
runs, `itemsage train --catalog ...` (no engagement log) and `itemsage evaluate-catalog --json`,
and prints one markdown table: the share of top-10 neighbours sharing the label's first level and
full path for the model, TF-IDF over the same features, and random neighbours, with training time
and vocabulary coverage. `make bench-catalog` runs it on the shared Flipkart sample.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = {
    "demo": [
        "--d-model",
        "128",
        "--ffn-dim",
        "512",
        "--hash-buckets",
        "20000",
        "--vocab",
        "20000,40000,10000",
    ],
    "paper": [],  # `itemsage train`'s defaults are the paper's shape
}


def itemsage(*args: str) -> str:
    command = [sys.executable, "-m", "itemsage_cli.main", *args]
    print("$ itemsage " + " ".join(args), file=sys.stderr, flush=True)
    return subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True, cwd=ROOT).stdout


def run(catalog: str, mapping: str, label: str, size: str, withheld: bool, workdir: Path) -> dict:
    model = workdir / f"{size}-{'withheld' if withheld else 'all'}"
    exclude = ["--exclude-feature", label] if withheld else []
    started = time.perf_counter()
    itemsage(
        "train",
        "--catalog",
        catalog,
        "--mapping",
        mapping,
        "--out",
        str(model),
        *SIZES[size],
        *exclude,
    )
    seconds = time.perf_counter() - started
    report = json.loads(
        itemsage(
            "evaluate-catalog",
            "--model",
            str(model),
            "--catalog",
            catalog,
            "--mapping",
            mapping,
            "--label-column",
            label,
            *exclude,
            "--json",
        )
    )
    return {"size": size, "withheld": withheld, "train_s": round(seconds, 1), **report}


def table(rows: list[dict]) -> str:
    levels = sorted(rows[0]["agreement"], key=lambda level: level != "top level")
    head = [
        "model",
        "inputs",
        *[f"{lv}: {r}" for lv in levels for r in ("itemsage", "TF-IDF", "random")],
        "train s",
        "word coverage",
    ]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["size"], ", ".join(row["features"])]
        for level in levels:
            a = row["agreement"][level]
            cells += [
                f"**{a['itemsage']:.3f}**"
                if a["itemsage"] >= a["tfidf"]
                else f"{a['itemsage']:.3f}",
                f"{a['tfidf']:.3f}",
                f"{a['random']:.3f}",
            ]
        cells += [f"{row['train_s']:.0f}", f"{row['coverage']['word_coverage']:.3f}"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--catalog", default=str(ROOT.parent / "shared/data/flipkart_products.parquet")
    )
    parser.add_argument("--mapping", default=str(ROOT / "conf/mappings/flipkart.toml"))
    parser.add_argument("--label-column", default="product_type")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--out", default=str(ROOT / "bench/results/catalog_quality.json"))
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="itemsage-catalog-quality-"))
    rows = [
        run(args.catalog, args.mapping, args.label_column, size, withheld, workdir)
        for size in args.sizes
        for withheld in (False, True)
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")
    print(table(rows))
    print(f"\n(JSON: {args.out}; models under {workdir})")


if __name__ == "__main__":
    main()
