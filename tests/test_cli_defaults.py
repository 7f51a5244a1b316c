"""The CLI's option defaults are the config dataclasses' (written once), and every option of
`train` lands in the run it configures."""

from __future__ import annotations

import dataclasses
import inspect

import click
import pytest

from itemsage_cli import main, model_commands
from itemsage_core.embedding.embed_run import EmbedConfig
from itemsage_core.training.config import CATALOG_EPOCHS, LoopConfig, TrainConfig, TrainRun
from itemsage_core.training.prepared_data import PrepareConfig

REQUIRED = {
    "train": ["--catalog", "c", "--out", "m"],
    "embed": ["--catalog", "c", "--model", "m", "--table", "t"],
    "prepare-training": ["--catalog", "c", "--out", "d"],
}
# Options train_command itself makes into the LoopConfig, the StreamConfig and the run on Spark;
# then those _train_run turns into other values (parsed lists, the model's shape).
OWN = set(inspect.signature(model_commands.train_command.callback).parameters) - {"options"}
CONVERTED = OWN | set(inspect.signature(model_commands._train_run).parameters) - {"fields"}


def given(command: str, *args: str) -> dict:
    """The values the command's function gets for these arguments (defaults filled in)."""
    return main.cli.commands[command].make_context(command, [*REQUIRED[command], *args]).params


@pytest.mark.parametrize(
    ("command", "config"),
    [
        ("train", TrainConfig),
        ("train", TrainRun),
        ("train", LoopConfig),
        ("embed", EmbedConfig),
        ("prepare-training", PrepareConfig),
    ],
)
def test_option_defaults_are_the_dataclass_defaults(command, config):
    values = given(command)
    converted = CONVERTED if config is not LoopConfig else set()
    shared = [
        f
        for f in dataclasses.fields(config)
        if f.name in values and f.name not in converted and f.default is not dataclasses.MISSING
    ]
    minimum = 3 if config is LoopConfig else 5  # LoopConfig has 4 fields
    assert len(shared) >= minimum, f"{command} shares few options with {config.__name__}"
    for field in shared:
        assert values[field.name] == field.default, field.name


def test_every_train_option_reaches_the_run():
    fields = {f.name for f in dataclasses.fields(TrainConfig)} | {
        f.name for f in dataclasses.fields(TrainRun)
    }
    assert set(given("train")) - CONVERTED <= fields


def test_train_run_from_options_keeps_every_value():
    values = given("train", "--batch-size", "64", "--device", "cpu")
    run = model_commands._train_run(**{k: v for k, v in values.items() if k not in OWN})
    assert (run.catalog, str(run.out), run.device, run.train.batch_size) == ("c", "m", "cpu", 64)
    assert run.train.epochs == CATALOG_EPOCHS  # no engagement log: the catalog objective
    assert run.train.tasks == TrainConfig().tasks and run.vocab == TrainRun("c", "m").vocab


@pytest.mark.parametrize("command", sorted(main.cli.commands))
def test_every_option_says_what_it_does(command):
    options = [p for p in main.cli.commands[command].params if isinstance(p, click.Option)]
    assert [p.opts for p in options if not (p.help or "").strip()] == []
