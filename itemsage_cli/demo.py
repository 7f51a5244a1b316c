"""`itemsage demo`: the whole system on the embedded local Spark, in a few minutes on 2 cores.

generate a world -> train a small encoder -> embed the catalog into Delta on Spark -> build the
per-surface indexes on Spark -> sample queries shown with titles and categories, then where
everything was written and the command that runs each stage on its own. With a real catalog
(`--catalog`, e.g. the shared Flipkart sample, which has no engagement log) the README's recipe
for a real catalog: with `--text-model`, first featurize it (a sentence embedding per product, a
dense input of the encoder), then train on the catalog itself, check the model with
`evaluate-catalog` against TF-IDF, the sentence encoder and random neighbours
(`--label-column`), then embed and index it.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import click
import numpy as np
import pyarrow as pa

from itemsage_cli.demo_config import DEMO_MODEL, DEMO_VOCAB, DemoConfig
from itemsage_cli.progress import progress
from itemsage_cli.stage_commands import stage_commands
from itemsage_core.errors import ItemSageError
from itemsage_runs.data import generate


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


def demo_flow(config: DemoConfig) -> None:
    """Run every stage, then print what came out, where it went and each stage's command."""
    from index_builder.surfaces import load_surfaces
    from itemsage_runs import preflight

    load_surfaces(config.surfaces)  # a broken config fails now, not after training
    mapping = preflight.mapping(config.mapping)
    if config.catalog:
        preflight.catalog_path(config.catalog, mapping)
    started = time.perf_counter()
    config.workdir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    given = config
    if config.text_model:
        config = _featurize(config, mapping, seconds)
        mapping = preflight.mapping(config.mapping)
    inputs = _inputs(config, seconds)
    trained, quality = _train(config, inputs, seconds)
    served = config.catalog or inputs["catalog"]
    embedded, built = _embed_and_index(config, served, mapping, seconds)

    progress("stage 5/6: sample queries")
    shown, index, queries = _sample_queries(config, built)
    _print_results(config, trained, quality, served, embedded, built)
    click.echo(f"\n== {shown}: nearest neighbours of 3 products (cosine, title, category)")
    show_neighbours(served, mapping, index, queries, k=5)
    page = _report(config, seconds)
    _print_written(config)
    click.echo("\n== each stage on its own")
    for command in stage_commands(config, inputs, shown, queries[0], given):
        click.echo(f"  {command}")
    click.echo(
        "\n== seconds per stage: "
        + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items())
        + f"; total {time.perf_counter() - started:.0f}"
    )
    click.echo(f"\n== run report (recall vs speed, shards, scores, training, runs): {page}")


def _report(config: DemoConfig, seconds: dict) -> str:
    """The run report of everything the demo wrote; the page's location."""
    from itemsage_report.report import write_report

    progress(f"stage 6/6: the run report into {config.paths['report']}")
    t = time.perf_counter()
    paths = config.paths
    written = write_report(
        str(paths["indexes"]), str(paths["report"]), str(paths["embeddings"]),
        str(paths["model"]), progress=progress,
    )  # fmt: skip
    seconds["report"] = time.perf_counter() - t
    return Path(written["page"]).resolve().as_uri()


def _featurize(config: DemoConfig, mapping, seconds: dict) -> DemoConfig:
    """Featurize --catalog with --text-model; the config that trains on the featurized catalog
    and its mapping."""
    from itemsage_core.embedding.featurize_run import MAPPING_FILE, FeaturizeConfig
    from itemsage_runs.embed import featurize

    out = config.paths["featurized"]
    progress(f"stage 1/6: featurize {config.catalog}: a sentence embedding of each product")
    t = time.perf_counter()
    featurize(
        FeaturizeConfig(
            config.catalog, config.text_model, str(out), mapping, mapping_path=config.mapping
        ),
        config.master,
        config.conf,
        progress,
    )
    seconds["featurize"] = time.perf_counter() - t
    return dataclasses.replace(config, catalog=str(out), mapping=str(out / MAPPING_FILE))


def _inputs(config: DemoConfig, seconds: dict) -> dict:
    """The catalog and engagement log to train on: --catalog alone, or a generated world."""
    if config.catalog:
        progress(f"stage 1/6: train a small encoder on {config.catalog} itself (no engagement log)")
        return {"catalog": config.catalog, "engagements": None}
    progress("stage 1/6: generate a synthetic shopping world")
    t = time.perf_counter()
    paths = generate(config.paths["world"], config.products, config.seed, progress=progress)
    seconds["generate"] = time.perf_counter() - t
    progress("stage 2/6: train a small encoder (multi-task, in-process)")
    return paths


def _train(config: DemoConfig, inputs: dict, seconds: dict):
    """The demo's small encoder, and with --label-column its quality against TF-IDF."""
    from itemsage_runs.evaluate import evaluate_catalog
    from itemsage_runs.train import train
    from itemsage_runs.train_request import TrainRequest

    model = config.paths["model"]
    t = time.perf_counter()
    request = TrainRequest(
        catalog=inputs["catalog"],
        out=str(model),
        engagements=inputs["engagements"],
        mapping=config.mapping,
        epochs=config.train_epochs(),
        seed=config.seed,
        **DEMO_MODEL,
        vocab_sizes=DEMO_VOCAB,
    )
    trained = train(request, progress=progress)
    seconds["train"] = time.perf_counter() - t
    if not (config.catalog and config.label_column):
        return trained, None
    baselines = (config.text_model,) if config.text_model else ()
    progress(
        f"stage 2/6: check the model on {config.catalog}: neighbours sharing the "
        f"'{config.label_column}', beside TF-IDF, {'the sentence encoder, ' * len(baselines)}"
        "and random"
    )
    t = time.perf_counter()
    quality = evaluate_catalog(
        model, config.catalog, config.label_column, config.mapping, baseline_models=baselines
    )
    seconds["evaluate-catalog"] = time.perf_counter() - t
    return trained, quality[1]


def _embed_and_index(config: DemoConfig, served: str, mapping, seconds: dict):
    """The embedding job, then the index job and the neighbours of every published surface's
    products, on one local Spark session."""
    from itemsage_core.embedding.embed_run import EmbedConfig
    from itemsage_runs.embed import embed
    from itemsage_runs.indexes import (
        BuildRequest,
        NeighboursRequest,
        build_index,
        published_surfaces,
        write_neighbours,
    )

    table, indexes = str(config.paths["embeddings"]), str(config.paths["indexes"])
    spark = {"master": config.master, "conf": config.conf}
    progress(f"stage 3/6: embed {served} on Spark into a Delta table")
    t = time.perf_counter()
    embedding = EmbedConfig(served, str(config.paths["model"]), table, mapping)
    embedded = embed(embedding, progress=progress, **spark)
    seconds["embed"] = time.perf_counter() - t

    progress("stage 4/6: build the per-surface HNSW indexes, then every product's neighbours")
    t = time.perf_counter()
    common = {"catalog": served, "mapping": config.mapping, **spark}
    built = build_index(BuildRequest(table, config.surfaces, indexes, **common), progress)
    seconds["build-index"] = time.perf_counter() - t
    t = time.perf_counter()
    neighbours = NeighboursRequest(
        indexes,
        published_surfaces(built),
        str(config.paths["neighbours"]),
        surfaces_path=config.surfaces,
        **common,
    )
    built["neighbours"] = write_neighbours(neighbours, progress)
    seconds["neighbours"] = time.perf_counter() - t
    return embedded, built


def _sample_queries(config: DemoConfig, built: dict):
    """The surface to show (closeup if published), its loaded index and 3 random products."""
    from index_builder.index_reader import load_published
    from itemsage_runs.indexes import published_surfaces

    published = published_surfaces(built)
    if not published:
        raise ItemSageError(f"no surface was published: {built['surfaces']}")
    shown = "closeup" if "closeup" in published else published[0]
    index = load_published(config.paths["indexes"], shown)
    eligible = pa.concat_arrays([pa.array(ids.ids) for ids in index.ids])
    picks = np.random.default_rng(config.seed).choice(len(eligible), size=3, replace=False)
    return shown, index, [eligible[int(i)].as_py() for i in picks]


def _print_results(config, trained, quality, served: str, embedded: dict, built: dict) -> None:
    from index_builder.served_gate import served_text

    if trained.evaluation:
        click.echo(
            f"\n== encoder {trained.model_version}: held-out Recall@10 "
            f"{trained.evaluation.overall:.3f} (every task: `itemsage evaluate`)"
        )
    else:
        click.echo(f"\n== encoder {trained.model_version}, trained on {config.catalog} alone")
    if quality:
        click.echo("\n".join(quality.lines()))
    click.echo(
        f"== embeddings of {served}: {embedded['embedded']} products, "
        f"{embedded['quarantined']} "
        f"quarantined, table version {embedded['table_version']}, "
        f"{embedded.get('embedded_per_s') or 0:.0f} rows/s over the embedding stage"
    )
    click.echo("== indexes")
    for name, result in built["surfaces"].items():
        click.echo(
            f"  {name:8s} {result['status']}: {result['products']} products in "
            f"{result['shards']} shards, {served_text(result['served'])}"
        )
    click.echo("== neighbours tables")
    for name, result in built["neighbours"]["surfaces"].items():
        filters = result.get("exclude_same")
        click.echo(
            f"  {name:8s} {result['products']} products x top {built['neighbours']['k']} "
            f"(version {result['version']}) in {result['table']}"
            + (f", none sharing its {', '.join(filters)}" if filters else "")
        )


def _print_written(config: DemoConfig) -> None:
    paths = config.paths
    click.echo("\n== written")
    for label, path in [
        *([] if config.catalog else [("world", paths["world"])]),
        *([("featurized", paths["featurized"])] if config.text_model else []),
        ("model", paths["model"]),
        ("embeddings", paths["embeddings"]),
        ("quarantine", f"{paths['embeddings']}_quarantine"),
        ("indexes", paths["indexes"]),
        ("neighbours", paths["neighbours"]),
        ("report", paths["report"]),
    ]:
        click.echo(f"  {label:12s} {path}")
