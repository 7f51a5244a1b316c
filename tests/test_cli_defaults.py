"""The CLI's option defaults are the config dataclasses' (written once), and every option of
`train` lands in the run it configures."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from itemsage_cli import main, model_commands
from itemsage_core.embedding.embed_run import EmbedConfig
from itemsage_core.training.config import CATALOG_EPOCHS, TrainConfig, TrainRun

REQUIRED = {
    "train": ["--catalog", "c", "--out", "m"],
    "embed": ["--catalog", "c", "--model", "m", "--table", "t"],
}
# Options that _train_run turns into other values (parsed lists, the model's shape).
CONVERTED = set(inspect.signature(model_commands._train_run).parameters) - {"fields"}


def given(command: str, *args: str) -> dict:
    """The values the command's function gets for these arguments (defaults filled in)."""
    return main.cli.commands[command].make_context(command, [*REQUIRED[command], *args]).params


@pytest.mark.parametrize(
    ("command", "config"), [("train", TrainConfig), ("train", TrainRun), ("embed", EmbedConfig)]
)
def test_option_defaults_are_the_dataclass_defaults(command, config):
    values = given(command)
    shared = [
        f
        for f in dataclasses.fields(config)
        if f.name in values and f.name not in CONVERTED and f.default is not dataclasses.MISSING
    ]
    assert len(shared) >= 5, f"{command} shares few options with {config.__name__}"
    for field in shared:
        assert values[field.name] == field.default, field.name


def test_every_train_option_reaches_the_run():
    fields = {f.name for f in dataclasses.fields(TrainConfig)} | {
        f.name for f in dataclasses.fields(TrainRun)
    }
    assert set(given("train")) - CONVERTED <= fields


def test_train_run_from_options_keeps_every_value():
    run = model_commands._train_run(**given("train", "--batch-size", "64", "--device", "cpu"))
    assert (run.catalog, str(run.out), run.device, run.train.batch_size) == ("c", "m", "cpu", 64)
    assert run.train.epochs == CATALOG_EPOCHS  # no engagement log: the catalog objective
    assert run.train.tasks == TrainConfig().tasks and run.vocab == TrainRun("c", "m").vocab
