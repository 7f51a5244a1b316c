"""The embedding job against an object store: a real S3 API (moto's server) on 127.0.0.1.

The catalog is local; the Delta table and its quarantine live at s3:// URIs. Executors write the
data files through pyarrow's S3 filesystem and the driver commits through deltalake, both reading
credentials and the endpoint from the environment, as they would on a cluster.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from itemsage_core.embedding.embeddings_table import read_table
from itemsage_core.storage.parquet_io import write_parquet_dataset

pytestmark = pytest.mark.spark
moto_server = pytest.importorskip("moto.server", reason="moto[server] is in the dev extra")


def test_embed_job_commits_to_s3_and_a_rerun_is_idempotent(
    tmp_path, small_world, tiny_model_dir, s3_endpoint
):
    catalog = small_world.catalog.slice(0, 40)
    titles = catalog.column("title").to_pylist()
    titles[3] = None
    write_parquet_dataset(catalog.set_column(1, "title", pa.array(titles)), tmp_path / "catalog")
    credentials = {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t-value",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_S3_ALLOW_UNSAFE_RENAME": "true",
    }
    env = {**os.environ, **credentials}
    table_uri = "s3://lake/itemsage/embeddings"

    def embed():
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "itemsage_cli.main",
                "embed",
                "--catalog",
                str(tmp_path / "catalog"),
                "--model",
                str(tiny_model_dir),
                "--table",
                table_uri,
                "--run-id",
                "nightly-1",
                "--master",
                "local[1]",
                "--summary-json",
                str(tmp_path / "summary.json"),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    first = embed()
    assert first.returncode == 0, first.stderr[-3000:]
    options = {k.lower(): v for k, v in credentials.items()}
    table = DeltaTable(table_uri, storage_options=options)
    assert table.version() == 0
    assert read_table(table_uri, storage_options=options).num_rows == 39
    quarantine = read_table(table_uri + "_quarantine", storage_options=options)
    assert quarantine.column("product_id").to_pylist() == [catalog.column("product_id")[3].as_py()]

    again = embed()
    assert again.returncode == 0, again.stderr[-3000:]
    assert DeltaTable(table_uri, storage_options=options).version() == 0
    assert '"already_committed"' in (tmp_path / "summary.json").read_text()
    # The secret key is read from the environment and never written out.
    for text in (
        first.stdout,
        first.stderr,
        (tmp_path / "summary.json").read_text(),
        str(table.history()),
    ):
        assert "s3cr3t-value" not in text
