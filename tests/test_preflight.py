"""Checks before Spark starts (itemsage_runs/preflight.py): an output that cannot be written fails
the command in seconds with one `error:` line naming the path and the fix, through the CLI as a
user runs it; a probe object checks an object store."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pyarrow as pa
import pytest
from cli_runs import itemsage
from deltalake import write_deltalake

from itemsage_core.errors import ItemSageError
from itemsage_runs import preflight

SURFACES = Path(__file__).resolve().parents[1] / "conf" / "surfaces.toml"


def one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    return errors[0]


@pytest.fixture()
def table(tmp_path) -> str:
    uri = str(tmp_path / "embeddings")
    rows = pa.table(
        {
            "product_id": ["P1", "P2"],
            "embedding": pa.array([[1.0, 0.0], [0.0, 1.0]], pa.list_(pa.float32())),
            "model_version": ["m", "m"],
            "content_hash": ["a", "b"],
        }
    )
    write_deltalake(uri, rows)
    return uri


def test_a_folder_that_can_be_made_and_written_passes_and_nothing_is_left(tmp_path):
    preflight.writable(str(tmp_path / "new" / "deeper"), "--out")
    assert not (tmp_path / "new").exists() and os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("where", "says"),
    [
        ("file", "is a file, not a folder"),
        ("under-file", "cannot be created: "),
        ("read-only", "cannot be written ("),
    ],
)
def test_an_output_that_cannot_be_written_is_refused(tmp_path, where, says):
    (tmp_path / "a-file").write_text("x")
    locked = tmp_path / "locked"
    locked.mkdir()
    path = {
        "file": tmp_path / "a-file",
        "under-file": tmp_path / "a-file" / "out",
        "read-only": Path("/proc/itemsage-out") if os.geteuid() == 0 else locked / "out",
    }[where]
    locked.chmod(0o500)
    try:
        with pytest.raises(ItemSageError, match="--out ") as raised:
            preflight.writable(str(path), "--out")
    finally:
        locked.chmod(0o700)
    assert says in str(raised.value) and str(path) in str(raised.value)


def test_build_index_refuses_an_unwritable_out_before_spark_starts(table, tmp_path):
    (tmp_path / "a-file").write_text("x")
    cases = [
        ("/proc/itemsage-indexes", "cannot be written"),
        (str(tmp_path / "a-file" / "indexes"), "is a file; choose another path"),
    ]
    for out, says in cases:
        done = itemsage("build-index", "--table", table, "--surfaces", str(SURFACES), "--out", out)
        line = one_error_line(done)
        assert line.startswith(f"error: --out {out} ") and says in line
        assert "SparkSession" not in done.stderr and "WARNING: Using incubator" not in done.stderr


def test_report_and_neighbours_refuse_an_unwritable_out(tmp_path):
    (tmp_path / "a-file").write_text("x")
    out = str(tmp_path / "a-file" / "report")
    assert "error: --out " in one_error_line(
        itemsage("report", "--index", str(tmp_path), "--out", out)
    )
    line = one_error_line(
        itemsage("neighbours", "--index", str(tmp_path), "--surface", "home", "--out", out)
    )
    assert line.startswith(f"error: --out {out} cannot be created")


def test_an_object_store_is_probed_with_an_object(s3_endpoint, monkeypatch):
    for name, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ALLOW_HTTP": "true",
    }.items():
        monkeypatch.setenv(name, value)
    preflight.writable("s3://lake/indexes", "--out")
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    assert client.list_objects_v2(Bucket="lake").get("KeyCount", 0) == 0  # the probe is gone
    with pytest.raises(ItemSageError, match=r"--out s3://no-such-bucket/x cannot be written"):
        preflight.writable("s3://no-such-bucket/x", "--out")


def test_embed_refuses_a_table_it_cannot_write(small_world_dir, tiny_model_dir, tmp_path):
    (tmp_path / "a-file").write_text("x")
    table = str(tmp_path / "a-file" / "embeddings")
    done = itemsage(
        "embed", "--catalog", str(small_world_dir / "catalog"), "--model", str(tiny_model_dir),
        "--table", table,
    )  # fmt: skip
    assert one_error_line(done) == (
        f"error: --table {table} cannot be created: {tmp_path / 'a-file'} is a file; "
        "choose another path"
    )
    assert "WARNING: Using incubator" not in done.stderr  # no JVM was started
