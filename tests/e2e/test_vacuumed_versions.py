"""`itemsage build-index --table-version N` after `itemsage vacuum` removed version N's files:
one `error:` line naming the vacuum and the oldest readable version, no Spark error."""

from __future__ import annotations

import pyarrow as pa
import pytest
from cli_runs import itemsage
from deltalake import write_deltalake

from itemsage_core.errors import ItemSageError
from jobs.delta_frame import read_delta

pytestmark = pytest.mark.spark

SURFACES = """
[surfaces.home]
shards = 1
"""


def write(uri: str, version: int) -> None:
    ids = [f"p{i}" for i in range(20)]
    write_deltalake(
        uri,
        pa.table(
            {
                "product_id": ids,
                "embedding": pa.array(
                    [[float(i), float(version), 1.0] for i in range(20)], pa.list_(pa.float32())
                ),
                "model_version": ["m1"] * 20,
                "content_hash": [f"h{version}-{i}" for i in range(20)],
            }
        ),
        mode="overwrite",
    )


@pytest.fixture()
def vacuumed(tmp_path) -> str:
    """Versions 0-3, then a vacuum with no retention: only version 3's files are left."""
    uri = str(tmp_path / "embeddings")
    for version in range(4):
        write(uri, version)
    run = itemsage("vacuum", "--table", uri, "--retention-hours", "0")
    assert run.returncode == 0, run.stderr
    assert "deleted 3 file(s)" in run.stdout
    return uri


def test_build_index_at_a_vacuumed_version_says_which_versions_remain(vacuumed, tmp_path):
    (tmp_path / "surfaces.toml").write_text(SURFACES)
    run = itemsage(
        "build-index",
        "--table",
        vacuumed,
        "--surfaces",
        str(tmp_path / "surfaces.toml"),
        "--out",
        str(tmp_path / "indexes"),
        "--table-version",
        "1",
        "--master",
        "local[1]",
    )
    assert run.returncode == 1, run.stdout + run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: version 1 of {vacuumed} cannot be read: its files were removed by a vacuum "
        "(oldest readable version: 3); pass --table-version 3 or later, or omit it for the latest"
    ]
    assert "Traceback" not in run.stderr and "PATH_NOT_FOUND" not in run.stderr
    assert not (tmp_path / "indexes").exists() or not any((tmp_path / "indexes").iterdir())


def test_the_job_checks_a_pinned_version_before_spark_scans(spark, vacuumed):
    """The jobs' reader (object stores skip the CLI's local preflight) refuses it too."""
    with pytest.raises(ItemSageError, match=r"removed by a vacuum \(oldest readable version: 3\)"):
        read_delta(spark, vacuumed, 0)
    table, version = read_delta(spark, vacuumed, 3)
    assert version == 3 and table.count() == 20
