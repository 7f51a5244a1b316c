"""The CLI's option defaults are the request and config dataclasses' (written once), every option
of `train` is a field of its request, and the request becomes the run it configures."""

from __future__ import annotations

import dataclasses

import click
import pytest

from itemsage_cli import main
from itemsage_core.embedding.embed_run import EmbedConfig
from itemsage_core.model.config import ModelConfig
from itemsage_core.training.config import (
    CATALOG_EPOCHS,
    LoopConfig,
    PrepareConfig,
    StreamConfig,
    TrainConfig,
    TrainRun,
)
from itemsage_runs.defaults import default
from itemsage_runs.indexes import BuildRequest, NeighboursRequest
from itemsage_runs.query import QueryRequest
from itemsage_runs.train_request import TrainRequest

REQUIRED = {
    "train": ["--catalog", "c", "--out", "m"],
    "embed": ["--catalog", "c", "--model", "m", "--table", "t"],
    "prepare-training": ["--catalog", "c", "--out", "d"],
    "build-index": ["--table", "t", "--surfaces", "s.toml", "--out", "i"],
    "neighbours": ["--index", "i", "--surface", "home", "--out", "n"],
    "query": ["--index", "i", "--surface", "home"],
}
# What the commands read themselves, besides their request.
RENDERING = {"summary_json"}
# Request fields given as text that become other values in the run.
CONVERTED = {"epochs", "state_dir", "tasks", "teacher", "task_weights", "modalities"}


def given(command: str, *args: str) -> dict:
    """The values the command's function gets for these arguments (defaults filled in)."""
    return main.cli.commands[command].make_context(command, [*REQUIRED[command], *args]).params


@pytest.mark.parametrize(
    ("command", "request_type", "minimum"),
    [
        ("train", TrainRequest, 30),
        ("embed", EmbedConfig, 5),
        ("prepare-training", PrepareConfig, 5),
    ],
)
def test_option_defaults_are_the_request_defaults(command, request_type, minimum):
    values = given(command)
    shared = [
        f
        for f in dataclasses.fields(request_type)
        if f.name in values and f.default is not dataclasses.MISSING
    ]
    assert len(shared) >= minimum, f"{command} shares few options with {request_type.__name__}"
    for field in shared:
        assert values[field.name] == field.default, field.name


@pytest.mark.parametrize(
    ("command", "request_type"),
    [
        ("train", TrainRequest),
        ("build-index", BuildRequest),
        ("neighbours", NeighboursRequest),
        ("query", QueryRequest),
    ],
)
def test_every_option_is_a_field_of_the_request_and_back(command, request_type):
    fields = {f.name for f in dataclasses.fields(request_type)}
    assert set(given(command)) - RENDERING == fields


@pytest.mark.parametrize("config", [TrainConfig, ModelConfig, LoopConfig, TrainRun])
def test_the_request_defaults_are_the_configs_defaults(config):
    request = TrainRequest("c", "m")
    shared = [
        f
        for f in dataclasses.fields(config)
        if hasattr(request, f.name) and f.default is not dataclasses.MISSING
    ]
    assert shared
    for field in shared:
        if field.name not in CONVERTED:
            assert getattr(request, field.name) == field.default, field.name
    run = request.training_run()
    assert dict(run.model_options)["modalities"] == default(ModelConfig, "modalities")
    assert (run.train.tasks, run.train.teacher, run.train.task_weights) == (
        TrainConfig().tasks,
        (),
        (),
    )
    assert (request.shuffle_buffer, request.negative_pool) == (
        StreamConfig().shuffle_buffer,
        StreamConfig().negatives,
    )


def test_train_request_from_options_keeps_every_value():
    values = given("train", "--batch-size", "64", "--device", "cpu")
    run = TrainRequest(**{k: v for k, v in values.items() if k not in RENDERING}).training_run()
    assert (run.catalog, str(run.out), run.device, run.train.batch_size) == ("c", "m", "cpu", 64)
    assert run.train.epochs == CATALOG_EPOCHS  # no engagement log: the catalog objective
    assert run.train.tasks == TrainConfig().tasks and run.vocab == TrainRun("c", "m").vocab
    assert (
        run.loop.state_dir == "m.state"
        and dict(run.model_options)["mlp_hidden"] == run.model_options[0][1] == 512
    )


@pytest.mark.parametrize("command", sorted(main.cli.commands))
def test_every_option_says_what_it_does(command):
    options = [p for p in main.cli.commands[command].params if isinstance(p, click.Option)]
    assert [p.opts for p in options if not (p.help or "").strip()] == []
