"""Which objectives a run trains (config.objective_weights, the one rule; TrainRun.objectives)
and the objectives the in-memory path builds from it (trainer.objectives_for)."""

import pytest

from itemsage_core.training.config import (
    CATALOG,
    ENGAGEMENTS,
    PrepareConfig,
    TrainConfig,
    TrainRun,
    objective_weights,
)
from itemsage_core.training.model_runs import checkpoint_settings
from itemsage_core.training.objectives import Objective
from itemsage_core.training.trainer import objectives_for, prepare_catalog_data, prepare_data


@pytest.mark.parametrize(
    "engagements, weight, expected",
    [
        (True, 0.0, {ENGAGEMENTS: 1.0}),
        (True, 0.5, {ENGAGEMENTS: 1.0, CATALOG: 0.5}),
        (False, 0.0, {CATALOG: 1.0}),
        (False, 0.5, {CATALOG: 1.0}),  # without a log the catalog objective is the only one
    ],
)
def test_objective_weights(engagements, weight, expected):
    weights = objective_weights(TrainConfig(catalog_task_weight=weight), engagements)
    assert weights == expected and list(weights) == list(expected)  # engagements first
    train = TrainConfig(catalog_task_weight=weight, neighbours=7)
    run = TrainRun("catalog", "out", "log" if engagements else None, train=train)
    assert run.objectives() == expected
    assert checkpoint_settings(run)["objective"] == "+".join(expected)
    assert run.neighbours() == (7 if CATALOG in expected else 0)  # only the catalog task's data
    assert PrepareConfig.for_run(run, "data", 5).neighbours == run.neighbours()


def test_in_memory_objectives_follow_the_rule(small_world):
    data = prepare_data(small_world.catalog, small_world.engagements, 0.1, neighbours=3)
    catalog = prepare_catalog_data(small_world.catalog, neighbours=3)
    for chosen, weight in ((data, 0.0), (data, 0.25), (catalog, 0.0)):
        config = TrainConfig(batch_size=32, catalog_task_weight=weight)
        objectives: list[Objective] = objectives_for(chosen, config)
        weights = objective_weights(config, engagements=chosen.train is not None)
        assert [(o.name, o.weight) for o in objectives] == list(weights.items())
        for o in objectives:
            assert o.batch == 32 and o.steps_per_epoch() == -(-len(o) // 32)
            assert o.position() == {}  # in memory: the trainer's RNG is the whole position
