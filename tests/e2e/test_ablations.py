"""The paper's ablations on a small synthetic world (the 20k-product figures are in docs/model.md).

Image-only and text-only models miss the attributes only the other modality shows (the world hides
brand and material from images and visual style from text), and single-task models see a
fraction of the data that the multi-task model learns from.
"""

import numpy as np
import pytest

from itemsage_core.model.config import ModelConfig
from itemsage_core.synthetic.world import WorldConfig, generate_world
from itemsage_core.training.config import TrainConfig
from itemsage_core.training.evaluation import evaluate
from itemsage_core.training.trainer import prepare_data, train
from itemsage_core.training.training_examples import TASKS, parse_tasks

pytestmark = pytest.mark.ablation


@pytest.fixture(scope="module")
def data():
    world = generate_world(WorldConfig(products=1200, seed=4, engagements_per_product=10))
    return prepare_data(world.catalog, world.engagements, holdout_fraction=0.3)


def fit(data, modalities=("image", "text"), tasks="all"):
    config = ModelConfig.create(
        data.vocab.size,
        d_model=32,
        ffn_dim=64,
        mlp_hidden=32,
        hash_buckets=5000,
        hash_dim=64,
        modalities=modalities,
    )
    model, _ = train(
        data,
        config,
        TrainConfig(
            epochs=3, batch_size=128, random_negatives=64, warmup_steps=10, tasks=parse_tasks(tasks)
        ),
    )
    return model


@pytest.fixture(scope="module")
def multimodal(data):
    return fit(data)


def recall_on(model, data, tasks="all"):
    chosen = np.isin(data.heldout.tasks, [TASKS.index(t) for t in parse_tasks(tasks)])
    return evaluate(model, data.features, data.heldout.subset(chosen)).overall


def test_image_and_text_beat_either_modality_alone(data, multimodal):
    both = recall_on(multimodal, data)
    image = recall_on(fit(data, modalities=("image",)), data)
    text = recall_on(fit(data, modalities=("text",)), data)
    assert both > image + 0.01 and both > text + 0.01, (both, image, text)


@pytest.mark.parametrize("engagement", ["add_to_cart", "checkout"])
def test_multi_task_beats_single_task_on_conversions(data, multimodal, engagement):
    multi = recall_on(multimodal, data, engagement)
    single = recall_on(fit(data, tasks=engagement), data, engagement)
    assert multi > single + 0.2, (multi, single)
