"""The embedding run's rules, without Spark: its options, its id, its summary and its gate.

jobs/embed_catalog.py runs these around the Spark work: `EmbedConfig` holds a run's options
(`itemsage embed` takes its option defaults from it); `run_id_for` names the run, so a retried run
commits nothing twice; `add_totals` sums the tasks' file descriptions (embed_task) into the run
summary: row counts that must add up (every catalog row embedded, carried over or quarantined),
vocabulary coverage, failed conversions; `check_quarantine_share` keeps an empty or mostly
rejected catalog from replacing the table. It imports no PyTorch: the CLI reads its defaults.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

from itemsage_core.contracts.column_mapping import ColumnMapping, add_failures
from itemsage_core.contracts.validation_report import conversion_lines
from itemsage_core.embedding.embeddings_table import (
    DEFAULT_MAX_QUARANTINE_SHARE,
    NO_TABLE,
    quarantine_uri,
)
from itemsage_core.errors import ItemSageError
from itemsage_core.features.vocab_coverage import (
    DEFAULT_MIN_COVERAGE,
    add_coverage,
    coverage_summary,
    low_coverage_warning,
)
from itemsage_core.storage.parquet_io import parquet_stamps
from itemsage_core.storage.uris import absolute_uri


@dataclasses.dataclass(frozen=True)
class EmbedConfig:
    """One embedding run's options (docs/embeddings-table.md describes each)."""

    catalog: str
    model_dir: str
    table_uri: str
    mapping: ColumnMapping | None = None
    run_id: str | None = None  # None: run_id_for derives one
    batch_size: int = 512
    precision: str = "fp32"
    incremental: bool = False
    writer: str = "deltalake"
    max_quarantine_share: float = DEFAULT_MAX_QUARANTINE_SHARE
    min_coverage: float = DEFAULT_MIN_COVERAGE


def run_id_for(config: EmbedConfig, model_version: str) -> str:
    """The config's run id, else one derived from the catalog files (path, size, mtime), the
    model, the mapping and the mode: the same inputs make the same run id."""
    if config.run_id:
        return config.run_id
    digest = hashlib.sha256(f"{model_version}:{config.incremental}".encode())
    for path, size, mtime_ns in parquet_stamps(config.catalog):
        digest.update(f"{absolute_uri(path)}:{size}:{mtime_ns}\n".encode())
    digest.update(repr(config.mapping).encode())
    return "run-" + digest.hexdigest()[:16]


def run_summary(config: EmbedConfig, run_id: str, model_version: str) -> dict:
    """What the run is, before it does anything: the head of its summary."""
    return {
        "run_id": run_id,
        "model_version": model_version,
        "catalog": config.catalog,
        "table": config.table_uri,
        "quarantine_table": quarantine_uri(config.table_uri),
    }


def nothing_committed(table_uri: str, read_version: int) -> str:
    """What a failed run leaves behind."""
    if read_version == NO_TABLE:
        return "nothing was committed"
    return f"nothing was committed, {table_uri} is still at version {read_version}"


def incremental_counts(read_version: int, statuses: dict[str, int], rows_before: int) -> dict:
    """An incremental run's catalog rows per status (new, changed, unchanged) and the table rows
    (of `rows_before`) whose products left the catalog (removed)."""
    kept = statuses.get("changed", 0) + statuses.get("unchanged", 0)
    return {
        "read_version": read_version,
        **{k: statuses.get(k, 0) for k in ("new", "changed", "unchanged")},
        "removed": rows_before - kept,
    }


def add_totals(
    summary: dict,
    rows_in: int,
    files: list[dict],
    carried: list[dict],
    conversions: dict,
    min_coverage: float,
) -> None:
    """Add the run's totals to `summary`: of its `rows_in` catalog rows, those embedded (`files`:
    the tasks' file descriptions), carried over (`carried`: the carried-over rows' files) and
    quarantined, which must add up (else RuntimeError: a run never commits a loss); the encoded
    rows' vocabulary coverage (coverage_summary); the mapping's failed `conversions`."""
    embedded = sum(f["rows"] for f in files if f["kind"] == "embeddings")
    kept = sum(f["rows"] for f in carried)
    quarantined = sum(f["rows"] for f in files if f["kind"] == "quarantine")
    summary.update(
        {
            "rows_in": rows_in,
            "embedded": embedded,
            "carried_over": kept,
            "quarantined": quarantined,
            "counts_add_up": rows_in == embedded + kept + quarantined,
        }
    )
    if not summary["counts_add_up"]:
        raise RuntimeError(f"row counts do not add up: {summary}")
    coverage: dict = {}
    for f in files:
        if f["coverage"]:
            add_coverage(coverage, json.loads(f["coverage"]))
    summary["vocab_coverage"] = coverage_summary(coverage, min_coverage)
    summary["conversions"] = conversions


def task_conversions(files: list[dict]) -> dict:
    """The mapping's failed conversions counted by the tasks that mapped raw rows, summed."""
    conversions: dict = {}
    for f in files:
        if f["conversions"]:
            add_failures(conversions, json.loads(f["conversions"]))
    return conversions


def summary_warnings(summary: dict) -> list[str]:
    """A line per extra column with failed conversions, and the low-coverage warning if any."""
    warning = low_coverage_warning(summary["vocab_coverage"], summary["model_version"])
    return conversion_lines(summary["conversions"]) + ([warning] if warning else [])


def check_quarantine_share(summary: dict, max_share: float) -> None:
    """Refuse to replace the table from a catalog that is empty or mostly rejected: the usual
    sign of a broken export, which would otherwise empty every index built from the table."""
    rows, rejected = summary["rows_in"], summary["quarantined"]
    if max_share >= 1 or (rows and rejected <= max_share * rows):
        return
    where = (
        f"; the reasons are in {summary['quarantine_table']} (run_id {summary['run_id']})"
        if rows
        else ""
    )
    what = (
        "the catalog has no rows"
        if not rows
        else f"{rejected} of {rows} rows ({rejected / rows:.0%}) were quarantined, more than "
        f"--max-quarantine-share {max_share:g}"
    )
    raise ItemSageError(
        f"{what}: {summary['table']} was left as it was{where}. Fix the catalog, or rerun with "
        "--max-quarantine-share 1 to commit anyway"
    )


def embedded_rate(embedded: int, embed_seconds: float) -> float | None:
    """Rows embedded per wall second of the embedding stage (`seconds.embed_s`: the Spark stage
    that checks, encodes and writes the rows; not Spark's start-up, the reading before it, the
    carry-over or the commit); None when no row was embedded."""
    return embedded / max(embed_seconds, 1e-9) if embedded else None


def committed_line(summary: dict) -> str:
    """The progress line of a committed run."""
    rate = summary.get("embedded_per_s")
    seconds = summary["seconds"]
    speed = (
        f"{rate:.0f} rows/s over the {seconds['embed_s']:.1f} s embedding stage"
        if rate
        else "nothing to encode"
    )
    return (
        f"committed {summary['embedded']} embeddings to {summary['table']} (version "
        f"{summary['table_version']}); {summary['quarantined']} rows quarantined; {speed}; "
        f"{seconds['total_s']:.1f} s in all"
    )
