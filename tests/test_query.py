"""`itemsage query` as a user runs it (itemsage_runs/query.py), without Spark: a batch of ids
answers the ones the surface serves and reports the others (or fails with --strict), and the
query errors name what to do instead."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pyarrow.parquet as pq
import pytest
from cli_runs import itemsage
from index_helpers import build_and_release, ids, unit_vectors

from index_builder.surfaces import Surface

DIM = 32


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """An index root with one released surface, `home`: 300 products P00000..P00299."""
    root = tmp_path_factory.mktemp("query") / "idx"
    build_and_release(root, Surface("home"), unit_vectors(300, DIM), ids(300))
    return root


def build_of(root) -> str:
    """The build id that CURRENT names."""
    from index_builder.layout import current_build_id

    return current_build_id(root, "home")


def itemsage_query(root, *args: str) -> subprocess.CompletedProcess:
    return itemsage("query", "--index", str(root), *args)


def ids_file(tmp_path, *product_ids: str):
    path = tmp_path / "ids.txt"
    path.write_text("".join(f"{pid}\n" for pid in product_ids))
    return str(path)


def rows(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def one_error_line(done: subprocess.CompletedProcess) -> str:
    """The run's stderr: exactly one line, `error: ...`, and no traceback."""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def test_unknown_ids_get_an_error_row_and_a_warning_while_the_others_are_answered(root, tmp_path):
    build = build_of(root)
    base = ["--surface", "home", "-k", "5"]
    known = itemsage_query(root, *base, "--ids-file", ids_file(tmp_path, "P00003", "P00250"))
    assert known.returncode == 0, known.stderr
    done = itemsage_query(
        root, *base, "--ids-file", ids_file(tmp_path, "P00003", "GONE1", "P00250", "GONE2")
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    warning = f"warning: 2 of 4 ids are not in surface 'home' (build {build}): GONE1, GONE2"
    assert done.stderr.splitlines() == [warning]
    found = rows(done.stdout)
    assert [r["query"] for r in found] == ["P00003", "GONE1", "P00250", "GONE2"]
    assert [found[0], found[2]] == rows(known.stdout)
    assert all(r["error"] is None and len(r["neighbours"]) == 5 for r in rows(known.stdout))
    for unknown in (found[1], found[3]):
        assert unknown["neighbours"] == []
        assert unknown["error"] == f"not in this surface's index (build {build})"


def test_the_warning_lists_at_most_ten_unknown_ids(root, tmp_path):
    gone = [f"GONE{i:02d}" for i in range(12)]
    done = itemsage_query(
        root, "--surface", "home", "--ids-file", ids_file(tmp_path, "P00001", *gone)
    )
    assert done.returncode == 0, done.stderr
    (warning,) = done.stderr.splitlines()
    assert warning.startswith("warning: 12 of 13 ids are not in surface 'home'")
    assert warning.endswith(": " + ", ".join(gone[:10]) + ", ...")
    assert len(rows(done.stdout)) == 13


def test_strict_fails_the_batch_on_an_unknown_id_and_writes_nothing(root, tmp_path):
    build = build_of(root)
    out = tmp_path / "found.jsonl"
    done = itemsage_query(
        root, "--surface", "home", "--ids-file", ids_file(tmp_path, "P00003", "GONE1"),
        "--out", str(out), "--strict",
    )  # fmt: skip
    assert done.returncode == 1
    assert one_error_line(done) == (
        f"error: product 'GONE1' is not in this surface's index (build {build})"
    )
    assert not out.exists() and done.stdout == ""


def test_a_batch_of_only_unknown_ids_fails(root, tmp_path):
    out = tmp_path / "found.jsonl"
    done = itemsage_query(
        root, "--surface", "home", "--ids-file", ids_file(tmp_path, "GONE1", "GONE2"),
        "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 1
    line = one_error_line(done)
    assert line.startswith("error: none of the 2 ids are in surface 'home'")
    assert line.endswith("nothing answered: GONE1, GONE2")
    assert not out.exists()


def test_files_of_a_batch_carry_the_error_column(root, tmp_path):
    for name in ("found.parquet", "found.jsonl"):
        out = tmp_path / name
        done = itemsage_query(
            root, "--surface", "home", "-k", "3", "--out", str(out),
            "--ids-file", ids_file(tmp_path, "P00007", "GONE1"),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "warning: 1 of 2 ids are not in surface 'home'" in done.stderr
        table = (
            pq.read_table(out).to_pylist() if name.endswith(".parquet") else rows(out.read_text())
        )
        assert [r["error"] is None for r in table] == [True, False]
        assert [len(r["neighbours"]) for r in table] == [3, 0]
        assert "not in this surface's index" in table[1]["error"]
    schema = pq.read_schema(tmp_path / "found.parquet")
    assert schema.names == ["query", "neighbours", "error"]
    assert str(schema.field("error").type) == "string"


def test_strict_goes_with_ids_file(root, tmp_path):
    np.save(tmp_path / "q.npy", unit_vectors(2, DIM))
    done = itemsage_query(
        root, "--surface", "home", "--vectors-file", str(tmp_path / "q.npy"), "--strict"
    )
    assert done.returncode == 2
    assert "--strict goes with --ids-file" in done.stderr


def test_an_unknown_surface_lists_the_surfaces_there(root):
    done = itemsage_query(root, "--surface", "nosuch", "--product-id", "P00001")
    assert done.returncode == 1
    line = one_error_line(done)
    assert line.startswith("error: no usable build of surface 'nosuch' under ")
    assert line.endswith("; surfaces here: home")


def test_a_matrix_as_vector_file_points_at_vectors_file(root, tmp_path):
    matrix = tmp_path / "queries.npy"
    np.save(matrix, unit_vectors(3, DIM))
    done = itemsage_query(root, "--surface", "home", "--vector-file", str(matrix))
    assert done.returncode == 1
    assert one_error_line(done) == (
        f"error: {matrix}: expected one vector, got shape (3, {DIM}); for several query "
        "vectors use --vectors-file"
    )
