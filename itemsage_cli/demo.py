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
import shlex
import time
from pathlib import Path

import click
import numpy as np
import pyarrow as pa

from itemsage_cli.report_command import report_location
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


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """`itemsage demo`'s options. Without `catalog`, a synthetic world of `products` products."""

    workdir: Path = Path("itemsage-demo")
    products: int = 10_000
    seed: int = 0
    epochs: int | None = None  # None: TrainConfig's default, or CATALOG_EPOCHS with a catalog
    master: str | None = None
    conf: tuple[str, ...] = ()
    catalog: str | None = None
    mapping: str | None = None
    surfaces: str = str(SURFACES)
    label_column: str | None = None
    text_model: str | None = None  # featurize --catalog with this sentence encoder first

    @property
    def paths(self) -> dict[str, Path]:
        """Where the demo writes each artefact, under workdir."""
        root = self.workdir
        return {
            "world": root / "world",
            "featurized": root / "featurized",
            "model": root / "model",
            "embeddings": root / "tables" / "embeddings",
            "indexes": root / "indexes",
            "neighbours": root / "tables" / "neighbours",
            "report": Path(report_location(str(root / "indexes"))),
        }

    def train_epochs(self) -> int:
        from itemsage_core.training.config import CATALOG_EPOCHS, TrainConfig

        return self.epochs or (CATALOG_EPOCHS if self.catalog else TrainConfig().epochs)


def demo_flow(config: DemoConfig) -> None:
    """Run every stage, then print what came out, where it went and each stage's command."""
    from index_builder.surfaces import load_surfaces
    from itemsage_runs import preflight

    surfaces = load_surfaces(config.surfaces)  # a broken config fails now, not after training
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
    embedded, built = _embed_and_index(config, served, surfaces, mapping, seconds)

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
    from jobs.featurize_job import featurize
    from jobs.spark_session import get_spark, parse_conf

    out = config.paths["featurized"]
    progress(f"stage 1/6: featurize {config.catalog}: a sentence embedding of each product")
    t = time.perf_counter()
    spark = get_spark("itemsage-demo", config.master, parse_conf(config.conf))
    featurize(
        spark,
        FeaturizeConfig(
            config.catalog, config.text_model, str(out), mapping, mapping_path=config.mapping
        ),
        progress=progress,
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
    paths = generate_stage(config.paths["world"], config.products, config.seed)
    seconds["generate"] = time.perf_counter() - t
    progress("stage 2/6: train a small encoder (multi-task, in-process)")
    return paths


def _train(config: DemoConfig, inputs: dict, seconds: dict):
    """The demo's small encoder, and with --label-column its quality against TF-IDF."""
    from itemsage_core.features.vocabulary import VocabConfig
    from itemsage_core.training.config import TrainConfig, TrainRun
    from itemsage_core.training.model_runs import evaluate_catalog_model, train_model

    model = config.paths["model"]
    t = time.perf_counter()
    run = TrainRun(
        catalog=inputs["catalog"],
        out=model,
        engagements=inputs["engagements"],
        mapping=config.mapping,
        train=TrainConfig(epochs=config.train_epochs(), seed=config.seed),
        model_options=tuple(DEMO_MODEL.items()),
        vocab=VocabConfig(*DEMO_VOCAB),
        hash_seed=config.seed,
    )
    trained = train_model(run, progress=progress)
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
    quality = evaluate_catalog_model(
        model, config.catalog, config.label_column, config.mapping, baseline_models=baselines
    )
    seconds["evaluate-catalog"] = time.perf_counter() - t
    return trained, quality[1]


def _embed_and_index(config: DemoConfig, served: str, surfaces, mapping, seconds: dict):
    """The embedding job, then the index job and the neighbours of every published surface's
    products, on one local Spark session."""
    from index_builder.build_config import BuildIndexConfig
    from index_builder.neighbours import NeighboursConfig
    from itemsage_core.embedding.embed_run import EmbedConfig
    from jobs.build_indexes import build_indexes
    from jobs.embed_catalog import embed_catalog
    from jobs.neighbours_job import write_neighbours
    from jobs.spark_session import get_spark, parse_conf

    table, indexes = str(config.paths["embeddings"]), str(config.paths["indexes"])
    progress(f"stage 3/6: embed {served} on Spark into a Delta table")
    t = time.perf_counter()
    spark = get_spark("itemsage-demo", config.master, parse_conf(config.conf))
    embed = EmbedConfig(served, str(config.paths["model"]), table, mapping)
    embedded = embed_catalog(spark, embed, progress=progress)
    seconds["embed"] = time.perf_counter() - t

    progress("stage 4/6: build the per-surface HNSW indexes, then every product's neighbours")
    t = time.perf_counter()
    build = BuildIndexConfig(table, indexes, surfaces, catalog=served, mapping=mapping)
    built = build_indexes(spark, build, progress=progress)
    seconds["build-index"] = time.perf_counter() - t
    t = time.perf_counter()
    published = tuple(n for n, r in built["surfaces"].items() if r["status"] == "published")
    exclude_same = {
        s.name: s.neighbours_exclude_same for s in surfaces if s.neighbours_exclude_same
    }
    neighbours = NeighboursConfig(
        indexes,
        published,
        str(config.paths["neighbours"]),
        exclude_same=exclude_same,
        catalog=served,
        mapping=mapping,
    )
    built["neighbours"] = write_neighbours(spark, neighbours, progress=progress)
    seconds["neighbours"] = time.perf_counter() - t
    return embedded, built


def _sample_queries(config: DemoConfig, built: dict):
    """The surface to show (closeup if published), its loaded index and 3 random products."""
    from index_builder.index_reader import load_published

    published = [n for n, r in built["surfaces"].items() if r["status"] == "published"]
    if not published:
        raise ItemSageError(f"no surface was published: {built['surfaces']}")
    shown = "closeup" if "closeup" in published else published[0]
    index = load_published(config.paths["indexes"], shown)
    eligible = pa.concat_arrays([pa.array(ids.ids) for ids in index.ids])
    picks = np.random.default_rng(config.seed).choice(len(eligible), size=3, replace=False)
    return shown, index, [eligible[int(i)].as_py() for i in picks]


def _print_results(config, trained, quality, served: str, embedded: dict, built: dict) -> None:
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
        f"{embedded.get('products_per_s', 0):.0f} products/s"
    )
    click.echo("== indexes")
    for name, result in built["surfaces"].items():
        click.echo(
            f"  {name:8s} {result['status']}: {result['products']} products in "
            f"{result['shards']} shards, recall@10 >= {result['recall_at_10']['min']:.3f}"
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


def _option(name: str, value) -> str:
    """` --name VALUE`, quoted, or nothing when there is no value."""
    return f" --{name} {_q(value)}" if value else ""


def _model_commands(config: DemoConfig, inputs: dict, given: DemoConfig | None) -> list[str]:
    """The commands up to a trained (and, with --label-column, checked) model: generate and
    train, or featurize (with --text-model), train and evaluate-catalog."""
    paths, catalog, model = config.paths, config.catalog, config.paths["model"]
    mapping = _option("mapping", config.mapping)
    shape = (
        f"--epochs {config.train_epochs()} --seed {config.seed} "
        f"--d-model {DEMO_MODEL['d_model']} --ffn-dim {DEMO_MODEL['ffn_dim']} "
        f"--hash-buckets {DEMO_MODEL['hash_buckets']} --vocab {','.join(map(str, DEMO_VOCAB))}"
    )
    if not catalog:
        return [
            f"itemsage generate --out {_q(paths['world'])} --products {config.products} "
            f"--seed {config.seed}",
            f"itemsage train --catalog {_q(inputs['catalog'])} --engagements "
            f"{_q(inputs['engagements'])} --out {_q(model)} {shape}",
        ]
    commands = [f"itemsage train --catalog {_q(catalog)}{mapping} --out {_q(model)} {shape}"]
    if config.text_model:
        given = given or config
        commands.insert(
            0,
            f"itemsage featurize --catalog {_q(given.catalog)}{_option('mapping', given.mapping)}"
            f" --text-model {_q(config.text_model)} --out {_q(paths['featurized'])}"
            f"{_option('master', config.master)}",
        )
    if config.label_column:
        commands.append(
            f"itemsage evaluate-catalog --model {_q(model)} --catalog {_q(catalog)}"
            f"{mapping} --label-column {_q(config.label_column)}"
            f"{_option('baseline-model', config.text_model)}"
        )
    return commands


def stage_commands(
    config: DemoConfig, inputs: dict, shown: str, query_id: str, given: DemoConfig | None = None
) -> list[str]:
    """The `itemsage` command that runs each stage on its own, as the demo ran it (`given`: the
    config before featurizing, whose catalog and mapping the featurize command reads)."""
    paths = config.paths
    model, table, indexes = paths["model"], paths["embeddings"], paths["indexes"]
    served = config.catalog or inputs["catalog"]
    master, mapping = _option("master", config.master), _option("mapping", config.mapping)
    return [
        *_model_commands(config, inputs, given),
        f"itemsage embed --catalog {_q(served)}{mapping} --model {_q(model)} "
        f"--table {_q(table)}{master}",
        f"itemsage build-index --table {_q(table)} --surfaces {_q(config.surfaces)} "
        f"--out {_q(indexes)} --catalog {_q(served)}{mapping}{master}",
        f"itemsage neighbours --index {_q(indexes)} --surface {shown} "
        f"--out {_q(paths['neighbours'])} --surfaces {_q(config.surfaces)} "
        f"--catalog {_q(served)}{mapping}{master}",
        f"itemsage query --index {_q(indexes)} --surface {shown} --product-id {query_id} "
        f"--catalog {_q(served)}{mapping} --show title,product_type",
        f"itemsage report --index {_q(indexes)} --table {_q(table)} --model {_q(model)}",
    ]
