"""`itemsage demo`: the whole system on the embedded local Spark, in a few minutes on 2 cores.

generate a world -> train a small encoder -> embed the catalog into Delta on Spark -> build the
per-surface indexes on Spark -> sample queries shown with titles and categories, then where
everything was written and the command that runs each stage on its own. With a real catalog
(`--catalog`, e.g. the shared Flipkart sample, which has no engagement log) the README's recipe
for a real catalog: train on the catalog itself, check the model with `evaluate-catalog` against
TF-IDF and random neighbours (`--label-column`), then embed and index it.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import click
import numpy as np
import pyarrow as pa

from itemsage_cli.stages import PROJECT_CONF, generate_stage, progress
from itemsage_core.errors import ItemSageError

# Small enough to train in about a minute on 2 cores; the paper's shape is `itemsage train`'s
# default.
DEMO_MODEL = {
    "d_model": 128,
    "ffn_dim": 512,
    "layers": 1,
    "mlp_hidden": 128,
    "hash_buckets": 20_000,
}
DEMO_VOCAB = (20_000, 40_000, 10_000)
SURFACES = PROJECT_CONF / "surfaces.toml"


def _q(path) -> str:
    return shlex.quote(str(path))


def show_neighbours(catalog: str, mapping, index, product_ids: list[str], k: int) -> None:
    """Each query product's title and category, then its neighbours' (a person can judge)."""
    from itemsage_core.contracts.catalog_lookup import describe_products

    results = {pid: index.search(index.vector_of(pid), k, exclude=pid) for pid in product_ids}
    wanted = product_ids + [n for found in results.values() for n, _ in found]
    described = describe_products(catalog, mapping, wanted, ["title", "product_type"])

    def cut(text: str | None, width: int) -> str:
        text = text or ""
        return text if len(text) <= width else text[: width - 3] + "..."

    def describe(pid: str) -> str:
        row = described[pid]
        return f"{cut(row['title'], 70)}  [{cut(row['product_type'], 60)}]"

    for pid in product_ids:
        click.echo(f"\n  {pid}  {describe(pid)}")
        for neighbour, score in results[pid]:
            click.echo(f"    {score:.3f}  {neighbour}  {describe(neighbour)}")


def demo_flow(
    workdir: Path,
    products: int,
    seed: int,
    epochs: int,
    master: str | None,
    conf: tuple[str, ...] = (),
    catalog: str | None = None,
    mapping: str | None = None,
    surfaces: str | None = None,
    label_column: str | None = None,
) -> None:
    from index_builder.index_reader import load_published
    from index_builder.surfaces import load_surfaces
    from itemsage_cli import preflight
    from itemsage_core.features.vocabulary import VocabConfig
    from itemsage_core.training.model_runs import evaluate_catalog_model, train_model
    from itemsage_core.training.trainer import TrainConfig
    from jobs.build_indexes import build_indexes
    from jobs.embed_catalog import embed_catalog
    from jobs.spark_session import get_spark, parse_conf

    surfaces = surfaces or str(SURFACES)
    surface_config = load_surfaces(surfaces)  # a broken config fails now, not after training
    column_mapping = preflight.mapping(mapping)
    if catalog:
        preflight.catalog_path(catalog, column_mapping)
    started = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    world, model = workdir / "world", workdir / "model"
    table, indexes = workdir / "tables" / "embeddings", workdir / "indexes"
    seconds = {}

    if catalog:
        paths = {"catalog": catalog, "engagements": None}
        progress(f"stage 1/5: train a small encoder on {catalog} itself (no engagement log)")
    else:
        progress("stage 1/5: generate a synthetic shopping world")
        t = time.perf_counter()
        paths = generate_stage(world, products, seed)
        seconds["generate"] = time.perf_counter() - t
        progress("stage 2/5: train a small encoder (multi-task, in-process)")
    t = time.perf_counter()
    trained = train_model(
        paths["catalog"],
        paths["engagements"],
        model,
        TrainConfig(epochs=epochs, seed=seed),
        model_options=DEMO_MODEL,
        vocab_config=VocabConfig(*DEMO_VOCAB),
        mapping=mapping,
        hash_seed=seed,
        progress=progress,
    )
    seconds["train"] = time.perf_counter() - t
    quality = None
    if catalog and label_column:
        progress(
            f"stage 2/5: check the model on {catalog}: neighbours sharing the "
            f"'{label_column}', beside TF-IDF and random"
        )
        t = time.perf_counter()
        quality = evaluate_catalog_model(model, catalog, label_column, mapping)[1]
        seconds["evaluate-catalog"] = time.perf_counter() - t

    served = catalog or paths["catalog"]
    progress(f"stage 3/5: embed {served} on Spark into a Delta table")
    t = time.perf_counter()
    spark = get_spark("itemsage-demo", master, parse_conf(conf))
    embedded = embed_catalog(
        spark, served, str(model), str(table), column_mapping, progress=progress
    )
    seconds["embed"] = time.perf_counter() - t

    progress("stage 4/5: build the per-surface HNSW indexes on Spark")
    t = time.perf_counter()
    built = build_indexes(
        spark,
        str(table),
        surface_config,
        str(indexes),
        catalog=served,
        mapping=column_mapping,
        progress=progress,
    )
    seconds["build-index"] = time.perf_counter() - t

    progress("stage 5/5: sample queries")
    published = [n for n, r in built["surfaces"].items() if r["status"] == "published"]
    if not published:
        raise ItemSageError(f"no surface was published: {built['surfaces']}")
    shown = "closeup" if "closeup" in published else published[0]
    index = load_published(indexes, shown)
    eligible = pa.concat_arrays([pa.array(ids.ids) for ids in index.ids])
    picks = np.random.default_rng(seed).choice(len(eligible), size=3, replace=False)
    queries = [eligible[int(i)].as_py() for i in picks]

    if trained.evaluation:
        click.echo(
            f"\n== encoder {trained.model_version}: held-out Recall@10 "
            f"{trained.evaluation.overall:.3f} (every task: `itemsage evaluate`)"
        )
    else:
        click.echo(f"\n== encoder {trained.model_version}, trained on {catalog} alone")
    if quality:
        click.echo("\n".join(quality.lines()))
    click.echo(
        f"== embeddings of {served}: {embedded['embedded']} products, "
        f"{embedded['quarantined']} "
        f"quarantined, table version {embedded['table_version']}, "
        f"{embedded.get('products_per_s', 0):.0f} products/s"
    )
    click.echo("== indexes")
    for name, result in built["surfaces"].items():
        click.echo(
            f"  {name:8s} {result['status']}: {result['products']} products in "
            f"{result['shards']} shards, recall@10 >= {result['recall_at_10']['min']:.3f}"
        )
    click.echo(f"\n== {shown}: nearest neighbours of 3 products (cosine, title, category)")
    show_neighbours(served, column_mapping, index, queries, k=5)

    click.echo("\n== written")
    for label, path in [
        *([] if catalog else [("world", world)]),
        ("model", model),
        ("embeddings", table),
        ("quarantine", f"{table}_quarantine"),
        ("indexes", indexes),
    ]:
        click.echo(f"  {label:12s} {path}")
    click.echo("\n== each stage on its own")
    master_flag = f" --master {_q(master)}" if master else ""
    mapping_flag = f" --mapping {_q(mapping)}" if mapping else ""
    shape = (
        f"--epochs {epochs} --seed {seed} --d-model {DEMO_MODEL['d_model']} "
        f"--ffn-dim {DEMO_MODEL['ffn_dim']} --hash-buckets {DEMO_MODEL['hash_buckets']} "
        f"--vocab {','.join(map(str, DEMO_VOCAB))}"
    )
    first = (
        [
            (f"itemsage train --catalog {_q(catalog)}{mapping_flag} --out {_q(model)} {shape}"),
            *(
                [
                    f"itemsage evaluate-catalog --model {_q(model)} --catalog {_q(catalog)}"
                    f"{mapping_flag} --label-column {_q(label_column)}"
                ]
                if label_column
                else []
            ),
        ]
        if catalog
        else [
            f"itemsage generate --out {_q(world)} --products {products} --seed {seed}",
            (
                f"itemsage train --catalog {_q(paths['catalog'])} --engagements "
                f"{_q(paths['engagements'])} --out {_q(model)} {shape}"
            ),
        ]
    )
    for command in [
        *first,
        (
            f"itemsage embed --catalog {_q(served)}{mapping_flag} --model {_q(model)} "
            f"--table {_q(table)}{master_flag}"
        ),
        (
            f"itemsage build-index --table {_q(table)} --surfaces {_q(surfaces)} "
            f"--out {_q(indexes)} --catalog {_q(served)}{mapping_flag}{master_flag}"
        ),
        (
            f"itemsage query --index {_q(indexes)} --surface {shown} --product-id {queries[0]} "
            f"--catalog {_q(served)}{mapping_flag} --show title,product_type"
        ),
    ]:
        click.echo(f"  {command}")
    click.echo(
        "\n== seconds per stage: "
        + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items())
        + f"; total {time.perf_counter() - started:.0f}"
    )
