"""A pinned table version whose files a vacuum removed: one error naming the vacuum and the
oldest readable version, checked from Python before any scan (no Spark here)."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from itemsage_core.embedding.embeddings_table import read_table, vacuum
from itemsage_core.embedding.table_versions import oldest_readable, require_readable
from itemsage_core.errors import ItemSageError


def rows(version: int) -> pa.Table:
    ids = [f"p{version}-{i}" for i in range(3)]
    return pa.table(
        {
            "product_id": ids,
            "embedding": pa.array([[0.1 * version, 1.0]] * 3, pa.list_(pa.float32())),
            "model_version": ["m1"] * 3,
            "content_hash": [f"h{version}"] * 3,
        }
    )


def write_versions(uri: str, count: int, storage_options: dict | None = None) -> None:
    for version in range(count):
        write_deltalake(uri, rows(version), mode="overwrite", storage_options=storage_options)


def test_every_version_is_readable_before_a_vacuum(tmp_path):
    uri = str(tmp_path / "embeddings")
    write_versions(uri, 4)
    for version in range(4):
        require_readable(uri, version)
    assert oldest_readable(uri) == 0
    assert read_table(uri, version=1).column("content_hash").to_pylist() == ["h1"] * 3


def test_a_vacuumed_version_names_the_vacuum_and_the_oldest_readable_version(tmp_path):
    uri = str(tmp_path / "embeddings")
    write_versions(uri, 4)
    vacuum(uri, retention_hours=0)  # keeps only version 3's files; adds versions 4 and 5
    for version in (0, 1, 2):
        with pytest.raises(ItemSageError) as caught:
            require_readable(uri, version)
        assert str(caught.value) == (
            f"version {version} of {uri} cannot be read: its files were removed by a vacuum "
            "(oldest readable version: 3); pass --table-version 3 or later, or omit it for the "
            "latest"
        )
    for version in range(3, DeltaTable(uri).version() + 1):
        require_readable(uri, version)
    assert oldest_readable(uri) == 3
    with pytest.raises(ItemSageError, match="removed by a vacuum"):
        read_table(uri, version=1)
    assert read_table(uri).column("content_hash").to_pylist() == ["h3"] * 3


def test_files_missing_without_a_vacuum_are_named(tmp_path):
    uri = str(tmp_path / "embeddings")
    write_versions(uri, 3)
    lost = DeltaTable(uri, version=1).file_uris()[0]
    os.remove(lost)
    with pytest.raises(ItemSageError) as caught:
        require_readable(uri, 1)
    message = str(caught.value)
    assert "1 of its 1 data files are missing" in message and os.path.basename(lost) in message
    assert "no vacuum" in message and "oldest readable version: 2" in message
    require_readable(uri, 2)


def test_no_complete_version_left(tmp_path):
    uri = str(tmp_path / "embeddings")
    write_versions(uri, 2)
    os.remove(DeltaTable(uri).file_uris()[0])
    with pytest.raises(ItemSageError, match="no version of the table has all its files"):
        require_readable(uri, 1)  # the latest; version 0 still has its files


def test_on_an_object_store(s3_endpoint, monkeypatch):
    options = {
        "aws_access_key_id": "test",
        "aws_secret_access_key": "test",
        "aws_region": "us-east-1",
        "aws_endpoint_url": s3_endpoint,
        "aws_allow_http": "true",
        "aws_s3_allow_unsafe_rename": "true",
    }
    uri = "s3://lake/itemsage/embeddings"
    write_versions(uri, 3, options)
    vacuum(uri, retention_hours=0, storage_options=options)
    require_readable(uri, 2, options)
    with pytest.raises(ItemSageError, match=r"removed by a vacuum \(oldest readable version: 2\)"):
        require_readable(uri, 0, options)
    # As the jobs read it: credentials and endpoint from the environment.
    for key, value in options.items():
        monkeypatch.setenv(key.upper(), value)
    require_readable(uri, 2)
    with pytest.raises(ItemSageError, match=r"oldest readable version: 2\)"):
        require_readable(uri, 1)
