"""The embedding job's writers: commit a run's data files to the embeddings and quarantine tables.

Both committers commit the quarantine files (append) first, then, past the run's quarantine-share
gate (itemsage_core/embedding/embed_run.py), the embeddings (overwrite), each table in one
transaction tagged with the run id, so a retried run commits nothing twice. They differ in where
the tasks write (`targets`) and in what commits: the deltalake library (the default) or Delta's
Spark connector (jobs/spark_delta_writer.py). `COMMITTERS` is the table of writers by name, which
the CLI's --writer choices list: this module imports no pyspark at its top.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

from itemsage_core.embedding.embed_run import EmbedConfig, check_quarantine_share
from itemsage_core.embedding.embeddings_table import (
    EMBEDDING_SCHEMA,
    QUARANTINE_SCHEMA,
    commit_files,
    committed_version,
    quarantine_uri,
    remove_tree,
    require_version,
)
from jobs.crash_points import crash_point
from jobs.spark_delta_writer import commit_with_spark, require_connector, staging_uri

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import SparkSession


class Committer(abc.ABC):
    """Commits one run's files to `uris` (the two tables); the tasks write them to `targets`."""

    def __init__(self, spark: SparkSession, config: EmbedConfig, run_id: str):
        self.spark, self.run_id = spark, run_id
        self.max_quarantine_share = config.max_quarantine_share
        table = config.table_uri
        self.uris = {"embeddings": table, "quarantine": quarantine_uri(table)}
        self.targets = self.uris

    def commit(self, files: list[dict], summary: dict, read_version: int) -> int:
        """Commit the quarantine files, then the embeddings; returns the embeddings table's new
        version. The embeddings are not committed when too much of the catalog was rejected
        (the quarantine still is, so the reasons can be read)."""
        bad = [f for f in files if f["kind"] == "quarantine"]
        good = [f for f in files if f["kind"] == "embeddings"]
        require_version(self.uris["embeddings"], read_version)  # another writer? before committing
        if bad:
            self.commit_quarantine(bad)
        check_quarantine_share(summary, self.max_quarantine_share)
        crash_point("before_commit")
        return self.commit_embeddings(good, summary, read_version)

    @abc.abstractmethod
    def commit_quarantine(self, files: list[dict]) -> None:
        """Append the quarantine files, unless this run already did."""

    @abc.abstractmethod
    def commit_embeddings(self, files: list[dict], summary: dict, read_version: int) -> int:
        """Replace the embeddings with `files`, the summary as commit metadata; the version."""


class DeltalakeCommitter(Committer):
    """Commits through the deltalake library, from the snapshot the run started from; the tasks
    write into the tables' locations."""

    def commit_quarantine(self, files: list[dict]) -> None:
        rows = sum(f["rows"] for f in files)
        metadata = {"run_id": self.run_id, "rows": rows}
        commit_files(
            self.uris["quarantine"], files, QUARANTINE_SCHEMA, "append", self.run_id, metadata
        )

    def commit_embeddings(self, files: list[dict], summary: dict, read_version: int) -> int:
        return commit_files(
            self.uris["embeddings"],
            files,
            EMBEDDING_SCHEMA,
            "overwrite",
            self.run_id,
            summary,
            read_version=read_version,
        )


class SparkDeltaCommitter(Committer):
    """Commits through Delta's Spark connector (which must be on the classpath: checked before
    the run starts); the tasks write into a staging folder under each table, deleted once the
    embeddings are committed."""

    def __init__(self, spark: SparkSession, config: EmbedConfig, run_id: str):
        require_connector(spark)
        super().__init__(spark, config, run_id)
        self.targets = {kind: staging_uri(uri, run_id) for kind, uri in self.uris.items()}

    def commit_quarantine(self, files: list[dict]) -> None:
        if committed_version(self.uris["quarantine"], self.run_id) is None:
            self._write(files, "quarantine", QUARANTINE_SCHEMA, "append", {"run_id": self.run_id})

    def commit_embeddings(self, files: list[dict], summary: dict, read_version: int) -> int:
        from deltalake import DeltaTable

        self._write(files, "embeddings", EMBEDDING_SCHEMA, "overwrite", summary)
        for staged in self.targets.values():
            remove_tree(staged)
        return DeltaTable(self.uris["embeddings"]).version()

    def _write(
        self, files: list[dict], kind: str, schema: pa.Schema, mode: str, metadata: dict
    ) -> None:
        commit_with_spark(
            self.spark,
            self.uris[kind],
            self.targets[kind],
            files,
            schema,
            mode,
            self.run_id,
            metadata,
        )


COMMITTERS: dict[str, type[Committer]] = {
    "deltalake": DeltalakeCommitter,
    "spark-delta": SparkDeltaCommitter,
}
