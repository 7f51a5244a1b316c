"""Faults around the embedding job: the driver SIGKILLed while executors write files,
two jobs racing on one table, a full disk. Each leaves the table at its previous version and
readable; the ones that can be rerun then complete. (Driver kills at the named points before and
after writing are in test_embed_job.py; an executor killed mid-task is in
test_standalone_cluster.py.)"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from itemsage_core.embedding.embed_run import EmbedConfig
from itemsage_core.embedding.embeddings_table import (
    EMBEDDING_SCHEMA,
    commit_files,
    read_table,
    table_version,
    write_data_file,
)
from itemsage_core.errors import ItemSageError
from itemsage_core.storage.parquet_io import write_parquet_dataset
from jobs.embed_catalog import embed_catalog

pytestmark = [pytest.mark.spark, pytest.mark.faults]


def embed_command(catalog: Path, model: Path, table: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "itemsage_cli.main",
        "embed",
        "--catalog",
        str(catalog),
        "--model",
        str(model),
        "--table",
        str(table),
        *extra,
    ]


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)


def write_catalog(table: pa.Table, folder: Path, files: int) -> Path:
    write_parquet_dataset(table, folder, rows_per_file=-(-table.num_rows // files))
    return folder


def data_files(table: Path) -> set[str]:
    return {p.name for p in table.glob("part-*.parquet")} if table.exists() else set()


def embed_here(spark, catalog: Path, model: Path, table: Path) -> dict:
    """A run in the tests' own SparkSession (no JVM start-up) for the steps nobody kills."""
    return embed_catalog(
        spark, EmbedConfig(str(catalog), str(model), str(table)), progress=lambda _: None
    )


def test_driver_killed_between_file_writes(spark, tmp_path, small_world, tiny_model_dir):
    catalog = small_world.catalog
    table = tmp_path / "embeddings"
    embed_here(
        spark, write_catalog(catalog.slice(0, 50), tmp_path / "v1", 1), tiny_model_dir, table
    )
    before = read_table(str(table))
    committed = data_files(table)

    # 16 files -> 16 tasks, one at a time: kill the driver as soon as the first has written.
    second = write_catalog(catalog, tmp_path / "v2", 16)
    job = subprocess.Popen(
        embed_command(second, tiny_model_dir, table, "--master", "local[1]"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not data_files(table) - committed and time.monotonic() < deadline:
            assert job.poll() is None, "the job ended before writing"
            time.sleep(0.005)
        written = data_files(table) - committed
        job.send_signal(signal.SIGKILL)
        assert job.wait(30) == -signal.SIGKILL
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job.pid, signal.SIGKILL)  # its JVM and Python workers too
    assert 1 <= len(written) < 16, written  # killed between the first and the last write
    time.sleep(1)
    orphans = data_files(table) - committed
    assert orphans  # files nobody committed: invisible to readers
    assert DeltaTable(str(table)).version() == 0
    assert read_table(str(table)).equals(before)

    assert embed_here(spark, second, tiny_model_dir, table)["status"] == "committed"
    after = read_table(str(table))
    assert DeltaTable(str(table)).version() == 1 and after.num_rows == catalog.num_rows
    assert len(set(after.column("product_id").to_pylist())) == catalog.num_rows

    # vacuum removes the orphans (and version 0's files) once they are past the retention.
    cleaned = run(
        [
            sys.executable,
            "-m",
            "itemsage_cli.main",
            "vacuum",
            "--table",
            str(table),
            "--retention-hours",
            "0",
        ]
    )
    assert cleaned.returncode == 0, cleaned.stderr
    assert not orphans & data_files(table)
    assert read_table(str(table)).sort_by("product_id").equals(after.sort_by("product_id"))


def test_two_jobs_on_one_table_one_commits_the_other_fails_clearly(
    spark, tmp_path, small_world, tiny_model_dir
):
    catalog = small_world.catalog
    table = tmp_path / "embeddings"
    embed_here(
        spark, write_catalog(catalog.slice(0, 20), tmp_path / "v0", 1), tiny_model_dir, table
    )
    catalogs = [
        write_catalog(catalog.slice(0, 200), tmp_path / "a", 2),
        write_catalog(catalog.slice(200, 200), tmp_path / "b", 2),
    ]
    logs = [tmp_path / f"job{i}.err" for i in range(2)]
    with contextlib.ExitStack() as files:
        jobs = [
            subprocess.Popen(
                embed_command(c, tiny_model_dir, table, "--master", "local[1]"),
                stdout=subprocess.DEVNULL,
                stderr=files.enter_context(log.open("w")),
            )
            for c, log in zip(catalogs, logs)
        ]
        codes = [job.wait(300) for job in jobs]
    results = [(code, "", log.read_text()) for code, log in zip(codes, logs)]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 1], [err[-2000:] for _, _, err in results]
    winner = next(i for i, (code, _, _) in enumerate(results) if code == 0)
    loser_error = [
        line for line in results[1 - winner][2].splitlines() if line.startswith("error: ")
    ]
    assert len(loser_error) == 1 and "changed while this run was working" in loser_error[0]
    assert "another writer committed first" in loser_error[0]
    rows = read_table(str(table))
    assert DeltaTable(str(table)).version() == 1
    assert sorted(rows.column("product_id").to_pylist()) == sorted(
        catalog.slice(200 * winner, 200).column("product_id").to_pylist()
    )
    assert embed_here(spark, catalogs[1 - winner], tiny_model_dir, table)["table_version"] == 2


@pytest.mark.parametrize("base_rows", [1, 0])
def test_racing_commits_from_the_same_version(tmp_path, monkeypatch, base_rows):
    """Both writers get past the version check (here: it is switched off): Delta's conflict
    detection refuses one, also when the version they start from holds no file to fight over."""
    from itemsage_core.embedding import embeddings_table

    monkeypatch.setattr(embeddings_table, "require_version", lambda *args, **kwargs: None)
    rows = pa.table(
        {
            "product_id": ["a"],
            "embedding": [[1.0]],
            "model_version": ["m"],
            "content_hash": ["h"],
            "run_id": ["r"],
            "embedded_at": pa.array([0], pa.timestamp("us", tz="UTC")),
        },
        schema=EMBEDDING_SCHEMA,
    )
    for attempt in range(3):
        uri = str(tmp_path / f"t{attempt}")
        commit_files(
            uri,
            [write_data_file(uri, rows, "base")] * base_rows,
            EMBEDDING_SCHEMA,
            "overwrite",
            "base",
            {},
        )
        outcome = race(uri, {run: [write_data_file(uri, rows, run)] for run in ("x", "y")})
        assert sorted(type(v).__name__ for v in outcome.values()) == ["int", "str"], outcome
        message = next(v for v in outcome.values() if isinstance(v, str))
        assert "another writer committed first" in message
        assert table_version(uri) == 1 and read_table(uri).num_rows == 1


def race(uri: str, files: dict[str, list[dict]]) -> dict:
    """Commit each run's files from version 0 in its own thread, released at the same moment;
    per run, its new version or its error message."""
    barrier, outcome = threading.Barrier(len(files)), {}

    def commit(run_id):
        barrier.wait()
        try:
            outcome[run_id] = commit_files(
                uri, files[run_id], EMBEDDING_SCHEMA, "overwrite", run_id, {}, read_version=0
            )
        except ItemSageError as exc:
            outcome[run_id] = str(exc)

    threads = [threading.Thread(target=commit, args=(r,)) for r in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcome


def _can_mount_tmpfs() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(
        [
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
            "mount -t tmpfs -o size=1m tmpfs /mnt",
        ],
        capture_output=True,
    )
    return probe.returncode == 0


def test_full_disk_fails_cleanly_and_leaves_the_table(tmp_path, small_world, tiny_model_dir):
    if not _can_mount_tmpfs():
        pytest.skip("needs `unshare --user --mount` to mount a small tmpfs (user namespaces)")
    catalog = small_world.catalog
    small = write_catalog(catalog.slice(0, 40), tmp_path / "small", 1)
    big = write_catalog(catalog, tmp_path / "big", 4)
    disk, kept = tmp_path / "disk", tmp_path / "kept"
    disk.mkdir()
    # In a private mount namespace: a 256 KiB tmpfs holds the table. The first run fits, the
    # second cannot; the table is copied out before the namespace (and the tmpfs) goes away.
    script = " && ".join(
        [
            f"mount -t tmpfs -o size=256k tmpfs {disk}",
            " ".join(embed_command(small, tiny_model_dir, disk / "t")) + " > /dev/null",
            "{ "
            + " ".join(embed_command(big, tiny_model_dir, disk / "t"))
            + f" > {tmp_path / 'out'} 2> {tmp_path / 'err'}; echo $? > {tmp_path / 'rc'}; }}",
            f"cp -r {disk / 't'} {kept}",
        ]
    )
    result = run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script])
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "rc").read_text().strip() == "1"
    errors = [
        line for line in (tmp_path / "err").read_text().splitlines() if line.startswith("error: ")
    ]
    assert len(errors) == 1, (tmp_path / "err").read_text()[-3000:]
    assert "No space left on device" in errors[0]
    assert f"nothing was committed, {disk / 't'} is still at version 0" in errors[0]
    table = DeltaTable(str(kept))
    assert table.version() == 0 and read_table(str(kept)).num_rows == 40
