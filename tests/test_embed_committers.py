"""jobs.embed_committers without Spark: the deltalake committer commits the quarantine, then the
embeddings in one transaction each; a rerun commits nothing; a mostly rejected catalog leaves the
embeddings table as it was, its quarantine committed; another writer's commit is not
overwritten."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from itemsage_core.embedding.embed_run import EmbedConfig
from itemsage_core.embedding.embeddings_table import (
    EMBEDDING_SCHEMA,
    NO_TABLE,
    QUARANTINE_SCHEMA,
    quarantine_uri,
    read_table,
    vector_column,
    write_data_file,
)
from itemsage_core.errors import ItemSageError
from jobs.embed_committers import COMMITTERS, DeltalakeCommitter

NOW = dt.datetime(2026, 12, 7, tzinfo=dt.timezone.utc)


def _embeddings(table: str, run_id: str, ids: list[str]) -> dict:
    rows = pa.table(
        [
            pa.array(ids),
            vector_column(np.ones((len(ids), 4), np.float32)),
            pa.array(["m1"] * len(ids)),
            pa.array(["h"] * len(ids)),
            pa.array([run_id] * len(ids)),
            pa.array([NOW] * len(ids), pa.timestamp("us", tz="UTC")),
        ],
        schema=EMBEDDING_SCHEMA,
    )
    return {**write_data_file(table, rows, run_id), "kind": "embeddings"}


def _quarantine(table: str, run_id: str, ids: list[str]) -> dict:
    rows = pa.table(
        [
            pa.array(ids),
            pa.array(["missing title"] * len(ids)),
            pa.array(["{}"] * len(ids)),
            pa.array([run_id] * len(ids)),
            pa.array([NOW] * len(ids), pa.timestamp("us", tz="UTC")),
        ],
        schema=QUARANTINE_SCHEMA,
    )
    return {**write_data_file(quarantine_uri(table), rows, run_id), "kind": "quarantine"}


def _summary(table: str, run_id: str, rows_in: int, quarantined: int) -> dict:
    return {"rows_in": rows_in, "quarantined": quarantined, "table": table,
            "quarantine_table": quarantine_uri(table), "run_id": run_id}  # fmt: skip


def _committer(table: str, run_id: str, share: float = 0.5) -> DeltalakeCommitter:
    config = EmbedConfig("catalog", "model", table, max_quarantine_share=share)
    return DeltalakeCommitter(None, config, run_id)


def test_the_writers_are_named_for_the_option():
    assert set(COMMITTERS) == {"deltalake", "spark-delta"}
    assert COMMITTERS["deltalake"] is DeltalakeCommitter


def test_a_run_commits_quarantine_then_embeddings_once(tmp_path):
    table = str(tmp_path / "embeddings")
    files = [_embeddings(table, "r1", ["a", "b", "c"]), _quarantine(table, "r1", ["x"])]
    version = _committer(table, "r1").commit(files, _summary(table, "r1", 4, 1), NO_TABLE)
    assert version == 0
    assert sorted(read_table(table).column("product_id").to_pylist()) == ["a", "b", "c"]
    assert read_table(quarantine_uri(table)).column("product_id").to_pylist() == ["x"]
    # the same run again (starting from the version it made): nothing committed twice
    assert _committer(table, "r1").commit(files, _summary(table, "r1", 4, 1), 0) is None
    assert DeltaTable(table).version() == 0
    assert DeltaTable(quarantine_uri(table)).version() == 0


def test_a_mostly_rejected_catalog_leaves_the_table_and_commits_its_quarantine(tmp_path):
    table = str(tmp_path / "embeddings")
    _committer(table, "r1").commit([_embeddings(table, "r1", ["a", "b"])],
                                   _summary(table, "r1", 2, 0), NO_TABLE)  # fmt: skip
    files = [_embeddings(table, "r2", ["a"]), _quarantine(table, "r2", ["b", "c", "d"])]
    with pytest.raises(ItemSageError, match="was left as it was.*--max-quarantine-share 1"):
        _committer(table, "r2").commit(files, _summary(table, "r2", 4, 3), 0)
    assert DeltaTable(table).version() == 0
    assert sorted(read_table(table).column("product_id").to_pylist()) == ["a", "b"]
    assert sorted(read_table(quarantine_uri(table)).column("product_id").to_pylist()) == [
        "b",
        "c",
        "d",
    ]


def test_a_run_never_overwrites_a_version_it_did_not_start_from(tmp_path):
    table = str(tmp_path / "embeddings")
    _committer(table, "r1").commit([_embeddings(table, "r1", ["a"])],
                                   _summary(table, "r1", 1, 0), NO_TABLE)  # fmt: skip
    _committer(table, "r2").commit([_embeddings(table, "r2", ["b"])],
                                   _summary(table, "r2", 1, 0), 0)  # fmt: skip
    late = [_embeddings(table, "r3", ["c"])]
    with pytest.raises(ItemSageError):
        _committer(table, "r3").commit(late, _summary(table, "r3", 1, 0), 0)
    assert read_table(table).column("product_id").to_pylist() == ["b"]
