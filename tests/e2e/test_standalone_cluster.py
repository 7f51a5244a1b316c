"""spark-submit.sh against a real standalone cluster on 127.0.0.1: a master and two workers,
started from the pip-installed pyspark, so executors are separate processes that get the code
and the model only through what the job ships."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyspark
import pytest
from test_index_object_store import s3_env
from test_model_object_store import TINY, WORLD, upload_world

from index_builder.index_reader import load_published
from itemsage_core.embedding.batch_embedder import BatchEmbedder
from itemsage_core.embedding.embeddings_table import read_table
from itemsage_core.model.checkpoint import (
    load_checkpoint,
    read_checkpoint_manifest,
    save_checkpoint,
)
from itemsage_core.storage.store import Store
from jobs.embed_catalog import EMBED_STAGE

SCRIPT = Path(__file__).resolve().parents[2] / "spark-submit.sh"
pytestmark = [pytest.mark.spark, pytest.mark.cluster]


def start(command: list[str], log: Path, env: dict) -> subprocess.Popen:
    """A background process writing stdout and stderr to `log` (the child keeps the file open)."""
    with open(log, "w") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, every: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise TimeoutError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    home = Path(pyspark.__file__).parent
    logs = tmp_path_factory.mktemp("cluster")
    env = {
        **os.environ,
        "SPARK_HOME": str(home),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_WORKER_DIR": str(logs / "work"),
    }
    port, ui = free_port(), free_port()
    url = f"spark://127.0.0.1:{port}"
    spark_class = str(home / "bin" / "spark-class")
    processes = [
        start(
            [
                spark_class,
                "org.apache.spark.deploy.master.Master",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--webui-port",
                str(ui),
            ],
            logs / "master.log",
            env,
        )
    ]
    try:
        wait_for(
            lambda: "I have been elected leader" in (logs / "master.log").read_text(),
            90,
            "the master",
        )
        for i in range(2):
            processes.append(
                start(
                    [
                        spark_class,
                        "org.apache.spark.deploy.worker.Worker",
                        url,
                        "--host",
                        "127.0.0.1",
                        "--cores",
                        "1",
                        "--memory",
                        "2g",
                        "--webui-port",
                        str(free_port()),
                    ],
                    logs / f"worker{i}.log",
                    env,
                )
            )
        wait_for(
            lambda: (logs / "master.log").read_text().count("Registering worker") >= 2,
            90,
            "two workers",
        )
        yield {"url": url, "logs": logs}
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def s3_for_driver_and_executors(endpoint: str, monkeypatch) -> list[str]:
    """moto's S3 credentials and endpoint set for this process (and the driver it starts);
    returns the --conf arguments that give them to the executors."""
    for name, value in s3_env(endpoint).items():
        monkeypatch.setenv(name, value)
    return [
        a for k, v in s3_env(endpoint).items() for a in ("--conf", f"spark.executorEnv.{k}={v}")
    ]


def test_embed_job_on_a_standalone_cluster(
    cluster, tmp_path, small_world, small_world_dir, tiny_model_dir, s3_endpoint, monkeypatch
):
    """The catalog, the model, the table and the indexes on a real S3 API (moto): executors
    read the catalog's row groups and fetch the model themselves (credentials through
    spark.executorEnv), nothing shared with the driver but the bucket."""
    executor_env = s3_for_driver_and_executors(s3_endpoint, monkeypatch)
    executor_cache = tmp_path / "executor-cache"
    for file in sorted((small_world_dir / "catalog").glob("*.parquet")):
        Store("s3://lake/catalog").write_bytes(file.name, file.read_bytes())
    tiny = load_checkpoint(tiny_model_dir)
    model = "s3://lake/models/tiny"
    save_checkpoint(model, tiny.model, tiny.vocab, tiny.config, {})
    table_uri = "s3://lake/embeddings"
    summary_file = tmp_path / "summary.json"
    result = subprocess.run(
        [
            str(SCRIPT),
            "--master",
            cluster["url"],
            "--conf",
            "spark.executor.memory=1g",
            "--conf",
            "spark.sql.shuffle.partitions=4",
            *executor_env,
            "--conf",
            f"spark.executorEnv.ITEMSAGE_CACHE_DIR={executor_cache}",
            "embed",
            "--catalog",
            "s3://lake/catalog",
            "--model",
            model,
            "--table",
            table_uri,
            "--summary-json",
            str(summary_file),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "ITEMSAGE_CACHE_DIR": str(tmp_path / "driver-cache")},
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    summary = json.loads(summary_file.read_text())
    assert summary["status"] == "committed" and summary["embedded"] == 400
    assert summary["counts_add_up"] and summary["model_version"] == tiny.model_version
    assert [p.name for p in (executor_cache / "checkpoints").iterdir()] == [tiny.model_version]
    rows = read_table(table_uri).sort_by("product_id")
    assert rows.num_rows == 400
    expected = BatchEmbedder.for_model(str(tiny_model_dir), summary["model_version"]).vectors(
        small_world.catalog.sort_by("product_id")
    )
    got = np.stack(rows.column("embedding").to_numpy(zero_copy_only=False))
    assert np.abs(got - expected).max() <= 1e-5
    # Executors of both workers ran (each worker logs its executors under its work dir).
    executors = list((cluster["logs"] / "work").glob("app-*/*/stderr"))
    assert len(executors) >= 2

    # The index job on the same cluster, into a real S3 API: shards built and uploaded by the
    # executors (credentials through spark.executorEnv), published by the driver.
    surfaces = tmp_path / "surfaces.toml"
    surfaces.write_text(
        '[surfaces.closeup]\nsharding = "kmeans"\nshards = 2\n[surfaces.search]\nshards = 2\n'
    )
    built = subprocess.run(
        [
            str(SCRIPT),
            "--master",
            cluster["url"],
            "--conf",
            "spark.executor.memory=1g",
            *executor_env,
            "build-index",
            "--table",
            table_uri,
            "--surfaces",
            str(surfaces),
            "--out",
            "s3://lake/indexes",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    for surface in ("closeup", "search"):
        loaded = load_published("s3://lake/indexes", surface, cache_dir=tmp_path / "cache")
        assert loaded.manifest["products"] == 400 and len(loaded.manifest["shards"]) >= 2
        assert loaded.search(got[0], k=1)[0][0] == rows.column("product_id")[0].as_py()


def test_training_on_a_standalone_cluster(
    cluster, tmp_path, small_world_dir, s3_endpoint, monkeypatch
):
    """`train --num-processes 2` under spark-submit: one training process on each worker (each
    has one task slot, and the barrier stage needs both at once), the catalog, the log, the
    prepared data, the states and the model on S3 (moto): nothing shared but the bucket."""
    executor_env = s3_for_driver_and_executors(s3_endpoint, monkeypatch)
    upload_world(small_world_dir)
    out = "s3://lake/models/cluster"
    result = subprocess.run(
        [
            str(SCRIPT), "--master", cluster["url"], "--conf", "spark.executor.memory=1g",
            *executor_env, "train", "--catalog", f"{WORLD}/catalog",
            "--engagements", f"{WORLD}/engagements", "--out", out, *TINY,
            "--num-processes", "2", "--max-steps", "6", "--checkpoint-every", "3",
            "--summary-json", str(tmp_path / "summary.json"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["training"]["processes"] == 2 and summary["training"]["steps"] == 6
    assert len(summary["peak_rss_mb_per_process"]) == 2
    assert summary["heldout"]["index_size"] == 400
    assert read_checkpoint_manifest(out)["model_version"] in result.stdout
    assert Store(f"{out}.state").names("") == ["step-00000003"]  # every 3 steps, the 6th ends
    assert "manifest.json" in Store(f"{out}.prepared").names("")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def executor_pid(work_dir: Path, executor_id: str) -> int | None:
    """The JVM of executor `executor_id` of the newest application on the cluster."""
    app = sorted(p.name for p in work_dir.glob("app-*"))[-1]
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            b"org.apache.spark.executor.CoarseGrainedExecutorBackend" in args
            and app.encode() in args
            and args[args.index(b"--executor-id") + 1] == executor_id.encode()
        ):
            return int(cmdline.parent.name)
    return None


def _rest(ui_port: int, path: str):
    with urllib.request.urlopen(
        f"http://127.0.0.1:{ui_port}/api/v1/applications{path}", timeout=5
    ) as response:
        return json.load(response)


def embedding_executors(ui_port: int) -> list[str]:
    """Ids of the executors running a task of the job's embedding stage now (the stage the job
    names EMBED_STAGE), from the driver's monitoring REST API."""
    try:
        app = _rest(ui_port, "")[0]["id"]
        running = []
        for stage in _rest(ui_port, f"/{app}/stages?status=active"):
            if stage.get("description") == EMBED_STAGE:
                running += [
                    t["executorId"]
                    for t in _rest(
                        ui_port,
                        f"/{app}/stages/{stage['stageId']}/{stage['attemptId']}"
                        "/taskList?status=running",
                    )
                ]
        return running
    except (OSError, ValueError, IndexError, KeyError):
        return []  # the driver's UI is not up yet


@pytest.mark.faults
def test_an_executor_killed_mid_task_is_retried_without_duplicates(
    cluster, tmp_path, small_world, tiny_model_dir
):
    import pyarrow.compute as pc

    from itemsage_core.storage.parquet_io import write_parquet_dataset

    copies = [
        small_world.catalog.set_column(
            0,
            "product_id",
            pc.binary_join_element_wise(small_world.catalog.column("product_id"), f"-{i}", ""),
        )
        for i in range(10)
    ]
    catalog = pa.concat_tables(copies)  # 4,000 products in 8 files: 8 tasks on 2 executors
    write_parquet_dataset(catalog, tmp_path / "catalog", rows_per_file=500)
    table, log, ui = tmp_path / "embeddings", tmp_path / "job.log", free_port()
    job = start(
        [
            str(SCRIPT),
            "--master",
            cluster["url"],
            "--conf",
            "spark.executor.memory=1g",
            "--conf",
            f"spark.ui.port={ui}",
            "embed",
            "--catalog",
            str(tmp_path / "catalog"),
            "--model",
            str(tiny_model_dir),
            "--table",
            str(table),
        ],
        log,
        # The driver's UI on loopback; Spark's WARN lines ("Lost task") in the log, as with
        # `itemsage --verbose` (the default console level is ERROR).
        env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "ITEMSAGE_SPARK_LOG_LEVEL": "WARN"},
    )
    try:
        # Kill an executor the driver says is running a task of the embedding stage. Its first
        # task there takes seconds (torch import, model load); should the task end just before
        # the kill, no task is lost, so try again (at most three kills, each of a busy
        # executor). The driver's REST API is polled from the start: its first answer takes
        # seconds.
        for _ in range(3):
            victim = None
            while victim is None and job.poll() is None:
                busy = embedding_executors(ui)
                if busy:
                    victim = executor_pid(cluster["logs"] / "work", busy[0])
                time.sleep(0.01)
            if victim is None:
                break
            os.kill(victim, signal.SIGKILL)  # like the OOM killer: no shutdown hooks
            try:
                wait_for(
                    lambda: "Lost task" in log.read_text() or job.poll() is not None,
                    20,
                    "the driver to lose the task",
                    every=0.1,
                )
                break
            except TimeoutError:
                continue  # the task had just finished: kill the next busy executor
        job.wait(timeout=600)
    finally:
        if job.poll() is None:
            job.kill()
    output = log.read_text()
    assert job.returncode == 0, output[-4000:]
    assert "Lost task" in output and "ExecutorLostFailure" in output, output[-4000:]
    rows = read_table(str(table))
    ids = rows.column("product_id").to_pylist()
    assert len(ids) == len(set(ids)) == 4000  # the retried task's rows are in once
    by_id = dict(zip(ids, rows.column("embedding").to_pylist()))
    version = read_checkpoint_manifest(str(tiny_model_dir))["model_version"]
    expected = BatchEmbedder.for_model(str(tiny_model_dir), version).vectors(catalog)
    got = np.array([by_id[i] for i in catalog.column("product_id").to_pylist()])
    assert np.abs(got - expected).max() <= 1e-5
