"""The embedding job's runs, read back from the embeddings table's Delta history: each run's
summary travels as its commit's metadata (`commit_files`), so the table itself says how many
products each run left, how many rows it quarantined and how fast it went."""

from __future__ import annotations

import datetime as dt
import json


def embed_runs(table_uri: str, storage_options: dict | None = None) -> list[dict]:
    """One entry per run that committed the table, oldest first: its version, time, run id,
    model version, catalog rows in, products embedded, carried over and in the table after,
    rows quarantined and rows embedded per second of its embedding stage (None for runs that
    embedded nothing and for runs recorded before that rate existed). Commits without a run
    summary (a vacuum, another writer) are left out."""
    from deltalake import DeltaTable

    runs = []
    for entry in DeltaTable(table_uri, storage_options=storage_options).history():
        summary = json.loads(entry.get("itemsage") or "{}")
        if "embedded" not in summary:
            continue
        runs.append(
            {
                "version": int(entry["version"]),
                "at": dt.datetime.fromtimestamp(
                    entry["timestamp"] / 1000, dt.timezone.utc
                ).isoformat(timespec="seconds"),
                "run_id": summary["run_id"],
                "model_version": summary["model_version"],
                "rows_in": summary["rows_in"],
                "embedded": summary["embedded"],
                "carried_over": summary["carried_over"],
                "products": summary["embedded"] + summary["carried_over"],
                "quarantined": summary["quarantined"],
                "embedded_per_s": summary.get("embedded_per_s"),
            }
        )
    return sorted(runs, key=lambda run: run["version"])
