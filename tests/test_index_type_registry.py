"""The index types as plugins, without Spark: every registered type builds, saves, loads and
searches a small random shard through the one Shard protocol; the registry names them, picks
`auto`'s candidates and gives a clear error for an unknown name."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from index_helpers import unit_vectors

from index_builder.batch_search import shard_hits
from index_builder.index_types.registry import (
    AUTO,
    CHOICES,
    DEFAULT,
    TYPES,
    candidates,
    index_type,
    type_of,
    updatable,
)
from index_builder.index_types.shard import Shard
from index_builder.shard_build import ShardParams, shard_files
from index_builder.surfaces import Surface
from itemsage_core.errors import ItemSageError

DIM, N = 16, 600


@pytest.mark.parametrize("name", list(TYPES))
def test_every_type_builds_saves_loads_and_searches_a_shard(tmp_path, name):
    kind = index_type(name)
    vectors = unit_vectors(N, DIM)
    params = ShardParams.of(Surface("home", index=name, pq_bytes=4))
    built, train = kind.build(vectors, params, 1, 7)
    assert isinstance(built, Shard) and built.count() == N
    assert (train is None) == (not kind.quantised)
    names = shard_files(0, 0, kind)
    assert names["index"].endswith(f".{kind.suffix}")
    built.save({role: tmp_path / names[role] for role in kind.roles})
    files = {role: {"path": names[role]} for role in kind.roles}
    entry = {"files": files, "vectors": N, "search": {"rerank": getattr(built, "rerank", 0)}}
    loaded = kind.load(tmp_path, entry, DIM)
    assert isinstance(loaded, Shard) and loaded.count() == N

    low, high = loaded.setting_range()
    assert 1 <= low <= high
    loaded.tune(high)
    assert loaded.setting == high and loaded.least_setting(5) <= 5
    labels, distances = loaded.search(vectors[:50], 5)
    assert labels.shape == distances.shape == (50, 5)
    assert np.mean(labels[:, 0] == np.arange(50)) >= 0.9  # each finds itself first
    exact = 1.0 - np.einsum("qd,qkd->qk", vectors[:50], vectors[labels.astype(np.int64)])
    np.testing.assert_allclose(distances, exact, atol=0.05 if kind.quantised else 1e-5)
    np.testing.assert_allclose(loaded.vectors_of(np.array([3, 9])), vectors[[3, 9]], atol=1e-6)


def test_a_batch_is_one_native_call_per_shard():
    kind = index_type(DEFAULT.name)
    vectors = unit_vectors(N, DIM)
    shard, _ = kind.build(vectors, ShardParams.of(Surface("home")), 1, 0)
    shard.index = mock.Mock(wraps=shard.index)
    starts = np.arange(N + 1)
    hits = shard_hits(shard, np.arange(N).astype(str), starts, vectors[:200], np.arange(200), 3, 1)
    assert shard.index.knn_query.call_count == 1 and len(hits.queries) == 600


def test_the_registry_names_the_types_and_auto_tries_them_largest_first():
    assert list(TYPES) == ["hnsw", "hnsw-sq8", "ivf-pq"] and CHOICES[-1] == AUTO
    assert candidates(AUTO) == tuple(TYPES.values())
    assert candidates("ivf-pq") == (TYPES["ivf-pq"],)
    params = ShardParams.of(Surface("home"))
    sizes = [kind.least_bytes(256, params) for kind in candidates(AUTO)]
    assert sizes == sorted(sizes, reverse=True)
    assert [updatable(choice) for choice in CHOICES] == [True, False, False, False]
    assert type_of({}) is DEFAULT  # a format-1 build's shard names no type
    assert type_of({"index": "hnsw-sq8"}) is TYPES["hnsw-sq8"]


def test_an_unknown_type_is_a_clear_error():
    with pytest.raises(ItemSageError, match=r"unknown index type 'pq' \(known: hnsw, hnsw-sq8"):
        index_type("pq")
    with pytest.raises(ItemSageError, match="unknown index type 'annoy'"):
        type_of({"index": "annoy"})
    with pytest.raises(ItemSageError, match="unknown index type 'auto'"):
        index_type(AUTO)  # a choice, not a type
