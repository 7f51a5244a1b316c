"""Reading the Delta tables from Python exits cleanly: `embeddings_table.read_table`, the read path
of the code, the bench and the docs, in fresh interpreters, every exit status 0.

deltalake's `DeltaTable(...).to_pyarrow_table()` scans through a Python filesystem whose buffers
Arrow's threads may release while the interpreter exits, which aborts the process ("terminate
called without an active exception", exit 134) a few runs in a hundred (docs/embeddings-table.md,
"Reading the table from Python"); `read_table` scans through a native pyarrow filesystem.
"""

from __future__ import annotations

import datetime as dt
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from itemsage_core.embedding.embeddings_table import (
    EMBEDDING_SCHEMA,
    QUARANTINE_SCHEMA,
    commit_files,
    quarantine_uri,
    read_table,
    write_data_file,
)

REPO = Path(__file__).resolve().parents[2]
RUNS = 10
WHEN = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def _quarantine_rows(run_id: str, n: int, start: int) -> pa.Table:
    return pa.table(
        {
            "product_id": [f"p{i}" for i in range(start, start + n)],
            "reason": ["title: blank" if i % 3 else "price: not a number" for i in range(n)],
            "raw_json": ["{}"] * n,
            "run_id": [run_id] * n,
            "quarantined_at": pa.array([WHEN] * n, pa.timestamp("us", tz="UTC")),
        },
        schema=QUARANTINE_SCHEMA,
    )


def _embedding_rows(run_id: str, n: int, start: int) -> pa.Table:
    ids = pa.array([f"p{i}" for i in range(start, start + n)])
    vectors = np.random.default_rng(start).random((n, 16), dtype=np.float32)
    return pa.table(
        [
            ids,
            pa.FixedSizeListArray.from_arrays(vectors.ravel(), 16).cast(pa.list_(pa.float32())),
            pa.array(["m1"] * n),
            ids,
            pa.array([run_id] * n),
            pa.array([WHEN] * n, pa.timestamp("us", tz="UTC")),
        ],
        schema=EMBEDDING_SCHEMA,
    )


def _commit(uri: str, run_id: str, parts: list[pa.Table], schema: pa.Schema, mode: str) -> int:
    files = [write_data_file(uri, part, run_id) for part in parts]
    return commit_files(uri, files, schema, mode, run_id, {"run_id": run_id})


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> str:
    """An embeddings table at version 1 (two overwrites) and its quarantine table (two appends),
    committed by our commit path, several data files per version."""
    uri = str(tmp_path_factory.mktemp("delta") / "embeddings")
    for version, run_id in enumerate(("run-a", "run-b")):
        assert (
            _commit(
                quarantine_uri(uri),
                run_id,
                [_quarantine_rows(run_id, 50, 1000 * version + 50 * k) for k in range(4)],
                QUARANTINE_SCHEMA,
                "append",
            )
            == version
        )
        assert (
            _commit(
                uri,
                run_id,
                [_embedding_rows(run_id, 200, 200 * k + version) for k in range(8)],
                EMBEDDING_SCHEMA,
                "overwrite",
            )
            == version
        )
    return uri


def _runbook_command() -> list[str]:
    """The runbook's "why were rows quarantined" command, as docs/operations.md prints it."""
    text = (REPO / "docs" / "operations.md").read_text()
    blocks = re.findall(r"```\n(.*?)```", text, flags=re.S)
    [block] = [b for b in blocks if "read_table('T_quarantine'" in b]
    argv = shlex.split(block.replace("\\\n", ""))
    assert argv[:2] == ["python", "-c"] and "to_pyarrow" not in argv[2]
    return [sys.executable, *argv[1:]]


def _run_many(argv: list[str]) -> list[subprocess.CompletedProcess]:
    def one(_):
        return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)

    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(one, range(RUNS)))


def _exit_statuses(runs: list[subprocess.CompletedProcess]) -> str:
    return "; ".join(f"{r.returncode}: {r.stderr.strip()[-300:]}" for r in runs if r.returncode)


def test_the_runbook_reader_exits_0_every_time(tables):
    argv = _runbook_command()
    argv[2] = (
        argv[2]
        .replace("'T_quarantine'", repr(quarantine_uri(tables)))
        .replace("'RUN_ID'", "'run-b'")
    )
    runs = _run_many(argv)
    assert all(r.returncode == 0 for r in runs), _exit_statuses(runs)
    for run in runs:  # run-b's 200 rows: every third 'price: ...', the rest 'title: blank'
        counts = dict(
            zip(
                re.findall(r'"(title: blank|price: not a number)"', run.stdout),
                re.findall(r"\b(132|68)\b", run.stdout),
            )
        )
        assert counts == {"title: blank": "132", "price: not a number": "68"}, run.stdout


def test_a_pinned_version_reader_exits_0_every_time(tables):
    """The bench's read: a version a build pinned, two columns."""
    code = (
        "from itemsage_core.embedding.embeddings_table import read_table; "
        f"t = read_table({tables!r}, version=0, columns=['product_id', 'embedding']); "
        "print(t.num_rows, t.column_names, set(t.column('product_id').to_pylist()) "
        "== {f'p{i}' for i in range(1600)})"
    )
    runs = _run_many([sys.executable, "-c", code])
    assert all(r.returncode == 0 for r in runs), _exit_statuses(runs)
    assert {r.stdout.strip() for r in runs} == {"1600 ['product_id', 'embedding'] True"}


def test_read_table_reads_the_versions_files(tables):
    """The rows of the version's data files, in the table's Delta schema (what deltalake's
    `to_pyarrow_table` returns; not called here, so that this process exits cleanly too)."""
    for uri in (tables, quarantine_uri(tables)):
        for version in (0, 1):
            delta = DeltaTable(uri, version=version)
            expected = pq.read_table(delta.file_uris())
            got = read_table(uri, version=version)
            assert got.schema.equals(pa.schema(delta.schema().to_arrow()))
            assert (
                got.sort_by("product_id").to_pylist() == expected.sort_by("product_id").to_pylist()
            )
    assert read_table(tables).column("run_id").unique().to_pylist() == ["run-b"]
    assert read_table(quarantine_uri(tables)).num_rows == 400  # appends: both runs
    picked = read_table(
        quarantine_uri(tables),
        columns=["product_id", "reason"],
        filter=pc.field("run_id") == "run-a",
    )
    assert picked.column_names == ["product_id", "reason"] and picked.num_rows == 200


def test_read_table_on_s3_with_storage_options(s3_endpoint):
    """Object stores: pyarrow's S3 filesystem configured from deltalake's storage options."""
    from deltalake import write_deltalake

    options = {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_S3_ALLOW_UNSAFE_RENAME": "true",
    }
    uri = "s3://lake/itemsage/t"
    write_deltalake(uri, pa.table({"a": [1, 2, 3]}), storage_options=options)
    write_deltalake(uri, pa.table({"a": [4]}), mode="append", storage_options=options)
    assert sorted(read_table(uri, storage_options=options).column("a").to_pylist()) == [1, 2, 3, 4]
    lower = {k.lower(): v for k, v in options.items()}
    assert read_table(uri, version=0, storage_options=lower).num_rows == 3
    code = (
        "from itemsage_core.embedding.embeddings_table import read_table; "
        f"print(read_table({uri!r}, storage_options={options!r}).num_rows)"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0 and run.stdout.strip() == "4", run.stderr[-2000:]
