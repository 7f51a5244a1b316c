"""The rules of an incremental refresh, without Spark: where additions go and when a surface is
rebuilt instead."""

from __future__ import annotations

import pytest

from index_builder.refresh_plan import (
    Rebuild,
    churn_reason,
    fill_shards,
    overflow_reason,
    rebuild_reason,
)
from index_builder.surfaces import parse_surfaces


def surface(**keys):
    return parse_surfaces({"surfaces": {"home": {"target_shard_size": 100, **keys}}})["home"]


def base(*counts: int, **extra) -> dict:
    shards = [{"shard": i, "count": n, "vectors": n, "group": i} for i, n in enumerate(counts)]
    return {"products": sum(counts), "shards": shards, "content_keys": True, **extra}


def test_additions_fill_the_emptiest_shard_first_and_never_pass_the_target_size():
    build = base(90, 60, 80)
    assert fill_shards(build, {}, 30, 100) == [(1, 30)]  # one shard touched
    assert fill_shards(build, {}, 55, 100) == [(1, 40), (2, 15)]
    assert fill_shards(build, {2: 50}, 55, 100) == [(2, 55)]  # after the night's removals
    with pytest.raises(Rebuild, match="1 added products do not fit under target_shard_size 100"):
        fill_shards(build, {}, 71, 100)


def test_too_many_changes_too_many_tombstones_or_an_outgrown_shard_mean_a_rebuild():
    home = surface()
    assert churn_reason(home, base(100, 100), 40) is None
    assert "41 of 200 products are new or changed" in churn_reason(home, base(100, 100), 41)
    assert overflow_reason(home, base(100, 100), {0: 20}, {}) is None
    assert "shard 0 would hold 21 deleted points of 100" in overflow_reason(
        home, base(100, 100), {0: 21}, {}
    )
    assert overflow_reason(home, base(100, 100), {0: 21}, {0: 21}) is None  # slots reused
    assert "shard 1 would hold 151 products (max_shard_growth 1.5" in overflow_reason(
        home, base(100, 140), {}, {1: 11}
    )


def test_changed_parameters_or_id_maps_without_content_keys_mean_a_rebuild():
    home = surface()
    built = base(10, config=home.params())
    assert rebuild_reason(home, built) is None
    assert rebuild_reason(surface(keep_builds=5, max_tombstone_share=0.3), built) is None
    assert rebuild_reason(surface(M=24), built) == "surface parameters changed: M 16 -> 24"
    assert "no content keys" in rebuild_reason(home, {**built, "content_keys": False})
