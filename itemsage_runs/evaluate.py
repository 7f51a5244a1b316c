"""Evaluation recipes: held-out Recall@K on an engagement log (read, or prepared on Spark), and
label agreement of a catalog's nearest neighbours beside TF-IDF, pretrained models and random."""

from __future__ import annotations

from itemsage_core.errors import OptionError
from itemsage_core.training.config import CATALOG_QUERIES, RECALL_K
from itemsage_runs import preflight
from itemsage_runs.spark import Progress, silent


def evaluate(
    model_dir: str,
    catalog: str | None,
    engagements: str | None,
    mapping: str | None,
    prepared: str | None,
    index_size: int,
    k: int,
    progress: Progress = silent,
) -> tuple[str, object]:
    """The model's version and its held-out evaluation, from `catalog` and `engagements` or
    from the data `prepared` on Spark."""
    from itemsage_core.training.model_runs import evaluate_model, evaluate_prepared_model

    if prepared and (catalog or engagements or mapping):
        raise OptionError(
            "give --prepared, or --catalog and --engagements (and --mapping), not both"
        )
    if prepared:
        return evaluate_prepared_model(
            model_dir, prepared, index_size=index_size, k=k, progress=progress
        )
    if not (catalog and engagements):
        raise OptionError("give --catalog and --engagements, or --prepared DIR")
    return evaluate_model(
        model_dir,
        catalog,
        engagements,
        preflight.mapping(mapping),
        index_size=index_size,
        k=k,
        progress=progress,
    )


def evaluate_catalog(
    model_dir: str,
    catalog: str,
    label_column: str,
    mapping: str | None = None,
    exclude_features: tuple[str, ...] = (),
    queries: int = CATALOG_QUERIES,
    k: int = RECALL_K,
    baseline_models: tuple[str, ...] = (),
    progress: Progress = silent,
) -> tuple[str, object]:
    """The model's version and how often its neighbours share `label_column`, beside the
    baselines."""
    from itemsage_core.training.model_runs import evaluate_catalog_model

    return evaluate_catalog_model(
        model_dir,
        catalog,
        label_column,
        preflight.mapping(mapping),
        exclude_features,
        queries,
        k,
        progress=progress,
        baseline_models=baseline_models,
    )
