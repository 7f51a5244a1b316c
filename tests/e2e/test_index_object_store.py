"""Indexes on an object store: a real S3 API (moto's server on 127.0.0.1), no filesystem shared
between the processes. Builds are uploaded, published by create-if-absent pointers (S3
`If-None-Match: *`), read back through a local cache, verified and rolled back on s3://."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import boto3
import pyarrow as pa
import pytest
from deltalake import write_deltalake
from index_helpers import ids, manifest_for, unit_vectors

from index_builder import layout
from index_builder.build_release import release_build
from index_builder.index_reader import ShardedIndex, load_published, roll_back, verify_current
from index_builder.plan import GroupBuild
from index_builder.shard_build import ShardParams
from index_builder.surfaces import Surface
from itemsage_core.embedding.embeddings_table import read_table
from itemsage_core.errors import ItemSageError
from itemsage_core.storage.arrow_ipc import to_ipc
from itemsage_core.storage.store import Store

pytest.importorskip("moto.server", reason="moto[server] is in the dev extra")
ROOT = "s3://lake/indexes"


def s3_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t-value",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_S3_ALLOW_UNSAFE_RENAME": "true",
    }


@pytest.fixture
def s3(s3_endpoint, monkeypatch, tmp_path):
    """The S3 environment set for this process, an empty index root, and a client to inspect it."""
    for name, value in s3_env(s3_endpoint).items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    Store(ROOT).delete("")
    return client


def keys(client, prefix: str) -> list[str]:
    found = client.list_objects_v2(Bucket="lake", Prefix=prefix).get("Contents", [])
    return sorted(o["Key"] for o in found)


def build(root, surface: Surface, vectors, product_ids, version: int, scratch):
    """A build as the job makes it: one group built on local disk and uploaded by GroupBuild,
    then its manifest; returns (manifest, the pointer the build started from)."""
    build_id = layout.new_build_id(version)
    base = layout.current_pointer(root, surface.name)
    params = ShardParams(16, 100, 64, 100, 0.3, 0)
    task = GroupBuild(Store(root), layout.build_key(surface.name, build_id), params, 60, 32)
    packed = (to_ipc(pa.table({"product_id": product_ids})), vectors.tobytes())
    entries = task.build(0, [packed], threads=1, scratch=str(scratch))
    manifest = manifest_for(surface, build_id, entries, version, 32)
    return manifest, base


def publish(root, surface, vectors, product_ids, version, scratch) -> dict:
    manifest, base = build(root, surface, vectors, product_ids, version, scratch)
    return release_build(root, surface, manifest, base)


def test_a_build_on_s3_answers_like_the_same_build_on_a_local_path(s3, tmp_path):
    vectors, product_ids = unit_vectors(200), ids(200)
    surface = Surface("home")
    on_s3 = publish(ROOT, surface, vectors, product_ids, 0, tmp_path)
    local = publish(tmp_path / "local", surface, vectors, product_ids, 0, tmp_path)
    assert on_s3["status"] == local["status"] == "published" and on_s3["shards"] == 4
    prefix = f"indexes/home/builds/{on_s3['build_id']}/"
    assert f"{prefix}manifest.json.sha256" in keys(s3, prefix)
    assert keys(s3, "indexes/home/CURRENT") == ["indexes/home/CURRENT-0000000001"]
    cache = tmp_path / "cache"
    remote = load_published(ROOT, "home", cache_dir=cache)
    same = load_published(tmp_path / "local", "home")
    for q in range(0, 200, 20):
        assert remote.search(vectors[q], k=10) == same.search(vectors[q], k=10)
    assert remote.directory.parent.parent.parent == cache  # <cache>/<root>/home/<build_id>
    assert remote.directory.parts[-2:] == ("home", on_s3["build_id"])
    assert verify_current(ROOT, "home", cache_dir=cache)["found_themselves"] == 20


def test_the_cache_fetches_a_build_once_and_a_damaged_cached_file_again(s3, tmp_path):
    vectors, product_ids = unit_vectors(200), ids(200)
    built = publish(ROOT, Surface("home"), vectors, product_ids, 0, tmp_path)
    cache = tmp_path / "cache"
    first = load_published(ROOT, "home", cache_dir=cache)
    shard = sorted(first.directory.glob("*.hnsw"))[0]
    fetched = {p.name: p.stat().st_mtime_ns for p in first.directory.iterdir()}
    load_published(ROOT, "home", cache_dir=cache)  # a hit: nothing fetched again
    assert {p.name: p.stat().st_mtime_ns for p in first.directory.iterdir()} == fetched
    original = shard.read_bytes()
    shard.write_bytes(original[:-7])  # damaged on the serving host's disk
    again = load_published(ROOT, "home", cache_dir=cache)
    assert shard.read_bytes() == original and again.manifest["build_id"] == built["build_id"]
    assert again.search(vectors[3], k=1)[0][0] == "P00003"


def test_a_corrupted_object_is_detected_and_the_newest_valid_build_answers(s3, tmp_path):
    vectors, product_ids = unit_vectors(200), ids(200)
    older = publish(ROOT, Surface("home"), vectors, product_ids, 0, tmp_path)
    newer = publish(ROOT, Surface("home"), vectors, product_ids, 1, tmp_path)
    shard = keys(s3, f"indexes/home/builds/{newer['build_id']}/shard-00000-01.hnsw")[0]
    body = bytearray(s3.get_object(Bucket="lake", Key=shard)["Body"].read())
    body[len(body) // 2] ^= 0xFF
    s3.put_object(Bucket="lake", Key=shard, Body=bytes(body))
    with pytest.raises(ItemSageError, match="does not match its checksum"):
        ShardedIndex.load(ROOT, "home", newer["build_id"], tmp_path / "cache")
    warnings = []
    loaded = load_published(ROOT, "home", warnings.append, cache_dir=tmp_path / "cache")
    assert loaded.manifest["build_id"] == older["build_id"]
    assert "instead of the current one" in warnings[0] and "s3://lake/indexes/home" in warnings[0]
    with pytest.raises(ItemSageError, match="truncated or corrupted"):
        verify_current(ROOT, "home", cache_dir=tmp_path / "cache")
    rolled = roll_back(ROOT, "home", cache_dir=tmp_path / "cache")
    assert rolled["current"] == older["build_id"] and rolled["previous"] == newer["build_id"]
    assert layout.current_pointer(ROOT, "home").seq == 3


def test_retention_and_killed_build_clean_up_work_on_s3(s3, tmp_path):
    vectors, product_ids = unit_vectors(60), ids(60)
    surface = Surface("home", keep_builds=2)
    killed = layout.build_key("home", layout.new_build_id(0))
    Store(ROOT).write_bytes(f"{killed}/shard-00000-00.hnsw", b"partial")
    results = [publish(ROOT, surface, vectors, product_ids, v, tmp_path) for v in range(1, 4)]
    assert layout.build_ids(ROOT, "home") == [results[2]["build_id"], results[1]["build_id"]]
    assert keys(s3, killed) == []
    assert results[0]["deleted_builds"] == [killed.rsplit("/", 1)[1]]


def at_once(calls: list) -> list:
    """Run the calls in threads released together; their results."""
    start, results = threading.Barrier(len(calls)), [None] * len(calls)

    def run(i: int) -> None:
        start.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_racing_publishers_on_s3_one_wins_and_the_other_is_told(s3, tmp_path):
    """Two builds started from the same CURRENT publish at the same moment, five times over:
    every time S3's If-None-Match lets exactly one create the next pointer."""
    vectors, product_ids = unit_vectors(60), ids(60)
    surface = Surface("home")
    publish(ROOT, surface, vectors, product_ids, 0, tmp_path)
    for round_ in range(5):
        made = [build(ROOT, surface, vectors, product_ids, round_, tmp_path) for _ in range(2)]
        assert made[0][1] == made[1][1]  # both started from the same pointer
        results = at_once([lambda m=m: release_build(ROOT, surface, *m) for m in made])
        statuses = sorted(r["status"] for r in results)
        assert statuses == ["failed", "published"], results
        winner, loser = sorted(results, key=lambda r: r["status"] != "published")
        assert "CURRENT moved while build" in loser["reason"]
        assert layout.current_build_id(ROOT, "home") == winner["build_id"]
        assert keys(s3, f"indexes/home/builds/{loser['build_id']}/") == []
        assert (
            load_published(ROOT, "home", cache_dir=tmp_path / "c").manifest["build_id"]
            == (winner["build_id"])
        )


def test_no_secret_enters_a_store_text_or_pickle(s3):
    import pickle

    store = Store(ROOT)
    store.names("")  # the filesystem (and its credentials) exists now
    assert "s3cr3t-value" not in repr(store) + str(pickle.dumps(store))


SURFACES = """
[defaults]
target_shard_size = 120
[surfaces.home]
shards = 2
[surfaces.closeup]
sharding = "kmeans"
shards = 2
probe_clusters = 2
"""


def itemsage(*args: str, env: dict, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "itemsage_cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        **kwargs,
    )


@pytest.mark.spark
def test_embed_build_query_verify_kill_and_rollback_entirely_on_s3(
    s3, s3_endpoint, tmp_path, small_world_dir, tiny_model_dir
):
    env = {**os.environ, **s3_env(s3_endpoint), "ITEMSAGE_CACHE_DIR": str(tmp_path / "cache")}
    (tmp_path / "surfaces.toml").write_text(SURFACES)
    table = "s3://lake/embeddings"
    outputs = []

    def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
        done = itemsage(*args, env=env, **kwargs)
        outputs.append(done.stdout + done.stderr)
        return done

    embedded = run(
        "embed", "--catalog", str(small_world_dir / "catalog"), "--model", str(tiny_model_dir),
        "--table", table, "--master", "local[1]",
    )  # fmt: skip
    assert embedded.returncode == 0, embedded.stderr[-3000:]

    def build_index(out: str, *extra: str) -> subprocess.CompletedProcess:
        return run(
            "build-index", "--table", table, "--surfaces", str(tmp_path / "surfaces.toml"),
            "--out", out, "--master", "local[1]", *extra,
        )  # fmt: skip

    first = build_index(ROOT)
    assert first.returncode == 0, first.stderr[-3000:]
    assert build_index(str(tmp_path / "local")).returncode == 0
    builds = {s: layout.current_build_id(ROOT, s) for s in ("home", "closeup")}
    product = read_table(table, columns=["product_id"]).column(0)[7].as_py()
    for surface in ("home", "closeup"):
        answers = []
        for root in (ROOT, str(tmp_path / "local")):
            args = ("--index", root, "--surface", surface, "--product-id", product, "-k", "5")
            answered = run("query", *args, "--json")
            assert answered.returncode == 0, answered.stderr[-3000:]
            answers.append(json.loads(answered.stdout))
        assert answers[0] == answers[1] and len(answers[0]) == 5
    assert list((tmp_path / "cache").glob(f"*/closeup/{builds['closeup']}/centroids.npy"))
    verified = run("verify-index", "--index", ROOT, "--surface", "home", "--surface", "closeup")
    assert verified.returncode == 0, verified.stderr[-3000:]
    assert [json.loads(line)["build_id"] for line in verified.stdout.splitlines()] == list(
        builds.values()
    )
    # Every product's neighbours, read from the S3 build by the executors, into an S3 table.
    listed = run(
        "neighbours", "--index", ROOT, "--surface", "closeup", "--out", "s3://lake/neighbours",
        "-k", "5", "--master", "local[1]",
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr[-3000:]
    rows = read_table("s3://lake/neighbours/closeup").to_pylist()
    served = load_published(ROOT, "closeup", cache_dir=tmp_path / "cache")
    assert sorted(r["product_id"] for r in rows) == sorted(
        p for shard in served.ids for p in shard.ids.tolist()
    )
    assert all(len(r["neighbours"]) == 5 and r["build_id"] == builds["closeup"] for r in rows)

    # A build killed (driver, JVM and workers) between two shard uploads publishes nothing.
    killed = itemsage(
        "build-index", "--table", table, "--surfaces", str(tmp_path / "surfaces.toml"),
        "--out", ROOT, "--master", "local[1]",
        env={**env, "ITEMSAGE_CRASH_AT": "between_shard_uploads"}, start_new_session=True,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL
    partial = [b for b in layout.build_ids(ROOT, "home") if b > builds["home"]]
    assert len(partial) == 1
    assert not layout.is_complete(Store(ROOT), "home", partial[0])
    uploaded = keys(s3, f"indexes/home/builds/{partial[0]}/")
    assert uploaded and all("-shard-" in k for k in uploaded)  # some shards, no manifest
    assert {s: layout.current_build_id(ROOT, s) for s in builds} == builds

    # The rerun, after a night that removed products, refreshes both builds on S3: executors
    # download the base shards, upload the updated files and copy the rest server-side.
    night = read_table(table)
    write_deltalake(table, night.slice(25), mode="overwrite")
    gone = set(night.column("product_id")[:25].to_pylist())
    rerun = build_index(ROOT, "--incremental")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = json.loads(rerun.stdout)["surfaces"]
    assert {s["mode"] for s in summary.values()} == {"incremental"}, summary
    assert partial[0] not in layout.build_ids(ROOT, "home")  # the killed build is cleaned up
    assert layout.current_build_id(ROOT, "home") != builds["home"]
    refreshed = load_published(ROOT, "home", cache_dir=tmp_path / "cache")
    served = {p for shard in refreshed.ids for p in shard.ids.tolist()}
    assert served and not served & gone
    assert "deleted" in refreshed.manifest["shards"][0]["files"]  # removals only: index kept
    for vector in night.column("embedding")[:25].to_pylist():
        assert not {p for p, _ in refreshed.search(vector, k=10)} & gone
    assert run("verify-index", "--index", ROOT, "--surface", "home").returncode == 0
    rolled = run("rollback-index", "--index", ROOT, "--surface", "home")
    assert rolled.returncode == 0, rolled.stderr[-3000:]
    assert json.loads(rolled.stdout)["current"] == builds["home"]
    assert layout.current_build_id(ROOT, "home") == builds["home"]
    for text in outputs:
        assert "s3cr3t-value" not in text
    for key in keys(s3, "indexes/"):
        if key.endswith(("manifest.json", "/CURRENT-0000000001")):
            assert b"s3cr3t" not in s3.get_object(Bucket="lake", Key=key)["Body"].read()


def test_the_cache_keeps_two_builds_and_never_evicts_one_in_use(s3, tmp_path):
    import fcntl

    vectors, product_ids = unit_vectors(60), ids(60)
    cache, loaded = tmp_path / "cache", []
    for version in range(3):
        publish(ROOT, Surface("home"), vectors, product_ids, version, tmp_path)
        loaded.append(load_published(ROOT, "home", cache_dir=cache).directory)
    assert [d.exists() for d in loaded] == [False, True, True]
    with open(loaded[1] / ".lock") as held:  # another process loading build 1
        fcntl.flock(held, fcntl.LOCK_SH)
        publish(ROOT, Surface("home"), vectors, product_ids, 3, tmp_path)
        newest = load_published(ROOT, "home", cache_dir=cache).directory
    assert [d.exists() for d in (*loaded, newest)] == [False, True, True, True]


def test_a_retried_task_uploads_its_own_files(s3, tmp_path):
    vectors, product_ids = unit_vectors(60), ids(60)
    key = layout.build_key("home", layout.new_build_id(0))
    task = GroupBuild(Store(ROOT), key, ShardParams(16, 100, 64, 100, 0.3, 0), 60, 32)
    packed = (to_ipc(pa.table({"product_id": product_ids})), vectors.tobytes())
    (entry,) = task.build(0, [packed], threads=1, scratch=str(tmp_path), attempt="17")
    assert [f["path"] for f in entry["files"].values()] == [
        "a17-shard-00000-00.hnsw",
        "a17-shard-00000-00.ids.parquet",
    ]
    assert Store(ROOT).names(key) == ["a17-shard-00000-00.hnsw", "a17-shard-00000-00.ids.parquet"]


def test_a_manifest_naming_a_file_outside_its_build_is_refused(s3, tmp_path):
    vectors, product_ids = unit_vectors(60), ids(60)
    built = publish(ROOT, Surface("home"), vectors, product_ids, 0, tmp_path)
    key = layout.build_key("home", built["build_id"])
    manifest = json.loads(Store(ROOT).read_bytes(f"{key}/manifest.json"))
    manifest["shards"][0]["files"]["index"]["path"] = "../../../escape.hnsw"
    layout.write_build_manifest(Store(ROOT), key, manifest)
    with pytest.raises(ItemSageError, match="names a file outside its build directory"):
        ShardedIndex.load(ROOT, "home", built["build_id"], tmp_path / "cache")
