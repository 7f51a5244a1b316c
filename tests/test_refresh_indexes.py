"""jobs.refresh_indexes' checks before any Spark work: a surface whose current build cannot be
refreshed is rebuilt, and says why (no build, a lost file, a lost or damaged manifest, a changed
config); a refreshed build's manifest records its lineage."""

from __future__ import annotations

import dataclasses

import pytest
from index_helpers import build_and_release, build_dir, ids, unit_vectors

from index_builder.layout import Pointer, current_pointer
from index_builder.refresh_plan import Rebuild
from index_builder.surfaces import Surface
from itemsage_core.storage.store import Store
from jobs.refresh_indexes import RefreshPlan, plan_refresh, refreshed_manifest

SURFACE = Surface(name="home", target_shard_size=100, ef_search=64)


@pytest.fixture
def published(tmp_path):
    build_and_release(tmp_path, SURFACE, unit_vectors(300), ids(300), version=3)
    return tmp_path, current_pointer(tmp_path, "home")


def _plan(root, pointer, surface=SURFACE):
    """plan_refresh up to its Spark work (spark and the eligible rows are never reached)."""
    return plan_refresh(None, surface, pointer, Store(str(root)), None, 4)


def test_no_published_build_is_rebuilt(tmp_path):
    with pytest.raises(Rebuild, match="no published build to refresh"):
        _plan(tmp_path, Pointer(0, None))


def test_a_build_that_lost_a_file_is_rebuilt(published):
    root, pointer = published
    next(build_dir(root, "home", pointer.build_id).glob("*.hnsw")).unlink()
    with pytest.raises(Rebuild, match=r"the current build lacks 1 files \(e\.g\. .*\.hnsw\)"):
        _plan(root, pointer)


@pytest.mark.parametrize("damage", ["lost", "edited"])
def test_a_build_without_a_sound_manifest_is_rebuilt(published, damage):
    root, pointer = published
    manifest = build_dir(root, "home", pointer.build_id) / "manifest.json"
    manifest.unlink() if damage == "lost" else manifest.write_text("{}")
    with pytest.raises(Rebuild, match="the current build cannot be read"):
        _plan(root, pointer)


def test_a_changed_surface_config_is_rebuilt(published):
    root, pointer = published
    with pytest.raises(Rebuild):
        _plan(root, pointer, dataclasses.replace(SURFACE, target_shard_size=50))


def test_a_refreshed_manifest_keeps_the_base_and_records_its_lineage(published):
    root, pointer = published
    from index_builder.layout import build_key, read_build_manifest

    base = read_build_manifest(Store(str(root)), build_key("home", pointer.build_id))
    plan = RefreshPlan(SURFACE, base, pointer, 4)
    plan.lineage = {"new": 0, "gone": 0, "changed": 0}
    entries = [{**entry, "tombstones": 1} for entry in base["shards"]]
    provenance = {"table_uri": "t", "table_version": 4, "catalog": None, "seconds": {}}
    manifest = refreshed_manifest(plan, entries, provenance)
    assert manifest["build_id"] == plan.build_id != base["build_id"]
    assert manifest["products"] == base["products"]
    assert manifest["lineage"] == {
        "base_build": base["build_id"],
        "base_table_version": 3,
        "table_version": 4,
        "new": 0,
        "gone": 0,
        "changed": 0,
        "tombstones": len(entries),
    }
