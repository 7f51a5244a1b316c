"""The `itemsage` command that runs each of the demo's stages on its own, as the demo ran it."""

from __future__ import annotations

import shlex

from itemsage_cli.demo_config import DEMO_MODEL, DEMO_VOCAB, DemoConfig


def _q(path) -> str:
    return shlex.quote(str(path))


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
        f"--hash-buckets {DEMO_MODEL['hash_buckets']} --vocab {DEMO_VOCAB}"
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
