"""How a loaded build answers, measured: served recall@10 (served_recall: through the reader,
against exact search) and queries/s as its search setting varies, and the scores its products'
neighbours get (what `itemsage report` plots). The setting swept is the shards' types'
(index_types), ef_search where they differ (shards searched with another setting then keep
their own)."""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np

from index_builder.index_types.registry import DEFAULT, type_of
from index_builder.served_recall import Sample, search
from index_builder.served_tuning import setting_steps
from index_builder.shard_build import recall_at_k, shard_setting

MIN_TIMED_S = 0.2  # each setting's queries are repeated for at least this long


@dataclasses.dataclass(frozen=True)
class Point:
    setting: int | None  # None: each shard's published setting
    recall: float
    qps: float


def swept_key(manifest: dict) -> str:
    """The setting a build's sweep varies: its shards' types' (nprobe when every shard is
    ivf-pq), else the default type's (ef_search)."""
    keys = {type_of(entry).setting_name for entry in manifest["shards"]}
    return keys.pop() if len(keys) == 1 else DEFAULT.setting_name


def published_settings(manifest: dict) -> list[int]:
    """Each shard's swept setting as published (a build's where a shard has none)."""
    key = swept_key(manifest)
    return [shard_setting(entry, manifest["params"], key) for entry in manifest["shards"]]


def steps(index) -> list[int]:
    """The settings swept: the swept types' sweep steps, up to the most any swept shard
    takes (ef_search from 10 to MAX_EF; nprobe up to the fewest lists)."""
    return list(setting_steps(index, swept_key(index.manifest)))


@contextlib.contextmanager
def searched_with(index, key: str, value: int):
    """The loaded build searched with `key` = `value` on every shard searched with that
    setting (the reader applies each shard's published one per search), its own after."""
    saved = index.manifest
    index.manifest = {
        **saved,
        "shards": [{**e, "search": {**e.get("search", {}), key: value}} for e in saved["shards"]],
    }
    try:
        yield
    finally:
        index.manifest = saved


def measure(index, drawn: Sample):
    """(recall@10, queries/s, scores of each query's results) of the build as it is set now,
    on one thread."""
    rows, scores, qps = search(index, drawn, MIN_TIMED_S)
    recall = recall_at_k(drawn.vectors, drawn.vectors[drawn.queries], rows, drawn.exact)
    return recall, qps, scores


def sweep(index, drawn: Sample) -> tuple[list[Point], Point, np.ndarray]:
    """Each swept setting's point, the published settings' point, and the published settings'
    result scores (queries x 10, NaN past the results found)."""
    key = swept_key(index.manifest)
    measure(index, drawn)  # warm-up: first touches of the graphs and vectors
    points = []
    for value in steps(index):
        with searched_with(index, key, value):
            recall, qps, _ = measure(index, drawn)
        points.append(Point(value, recall, qps))
    recall, qps, scores = measure(index, drawn)
    return points, Point(None, recall, qps), scores
