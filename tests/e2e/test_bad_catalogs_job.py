"""Bad catalogs through the real embedding job on local Spark: generated junk is embedded or
quarantined with the oracle's reasons; empty, all-bad and schema-broken catalogs stop clearly and
leave the table as it was."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from deltalake import DeltaTable
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_bad_catalogs import catalog_table, expected_rules, rows, rule_names

from itemsage_cli.main import cli
from itemsage_core.embedding.embed_run import EmbedConfig
from itemsage_core.embedding.embeddings_table import quarantine_uri, read_table
from itemsage_core.errors import ContractError, ItemSageError
from jobs.embed_catalog import embed_catalog

pytestmark = pytest.mark.spark


def quiet(_):
    pass


def write_files(table: pa.Table, folder: Path, cuts: list[int]) -> None:
    """The catalog as several files (an empty one where two cuts coincide)."""
    folder.mkdir(parents=True)
    bounds = [0, *sorted(min(c, table.num_rows) for c in cuts), table.num_rows]
    for i in range(len(bounds) - 1):
        pq.write_table(
            table.slice(bounds[i], bounds[i + 1] - bounds[i]), folder / f"part-{i}.parquet"
        )


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    generated=st.lists(rows(), min_size=1, max_size=25),
    cuts=st.lists(st.integers(0, 25), max_size=2),
)
def test_generated_catalogs_through_the_job(spark, tiny_model_dir, generated, cuts):
    work = Path(tempfile.mkdtemp(prefix="itemsage-bad-"))
    write_files(catalog_table(generated), work / "catalog", cuts)
    table_uri = str(work / "embeddings")
    summary = embed_catalog(
        spark,
        EmbedConfig(str(work / "catalog"), str(tiny_model_dir), table_uri, max_quarantine_share=1),
        progress=quiet,
    )
    expected = expected_rules(generated)
    valid = sum(1 for rules in expected if not rules)
    assert summary["counts_add_up"] and summary["rows_in"] == len(generated)
    assert (summary["embedded"], summary["quarantined"]) == (valid, len(generated) - valid)
    assert read_table(table_uri).num_rows == valid
    if valid < len(generated):
        quarantined = read_table(quarantine_uri(table_uri))
        got = Counter(frozenset(rule_names(r)) for r in quarantined.column("reason").to_pylist())
        assert got == Counter(frozenset(rules) for rules in expected if rules)


@pytest.fixture()
def world_catalog(small_world):
    return small_world.catalog.slice(0, 40)


def first_version(spark, tmp_path, catalog, model) -> str:
    pq.write_table(catalog, tmp_path / "good.parquet")
    table_uri = str(tmp_path / "embeddings")
    embed_catalog(
        spark, EmbedConfig(str(tmp_path / "good.parquet"), str(model), table_uri), progress=quiet
    )
    return table_uri


def test_empty_and_all_bad_catalogs_leave_the_table_as_it_was(
    spark, tmp_path, world_catalog, tiny_model_dir
):
    table_uri = first_version(spark, tmp_path, world_catalog, tiny_model_dir)
    before = read_table(table_uri)
    pq.write_table(world_catalog.slice(0, 0), tmp_path / "empty.parquet")
    with pytest.raises(ItemSageError, match="the catalog has no rows: .* was left as it was"):
        embed_catalog(
            spark,
            EmbedConfig(str(tmp_path / "empty.parquet"), str(tiny_model_dir), table_uri),
            progress=quiet,
        )
    bad = world_catalog.set_column(
        world_catalog.schema.get_field_index("title"),
        "title",
        pa.nulls(world_catalog.num_rows, pa.string()),
    )
    pq.write_table(bad, tmp_path / "bad.parquet")
    with pytest.raises(ItemSageError, match=r"40 of 40 rows \(100%\) were quarantined"):
        embed_catalog(
            spark,
            EmbedConfig(str(tmp_path / "bad.parquet"), str(tiny_model_dir), table_uri),
            progress=quiet,
        )
    assert DeltaTable(table_uri).version() == 0
    assert read_table(table_uri).equals(before)
    # The reasons are committed for diagnosis, once, even when the run is repeated.
    reasons = read_table(quarantine_uri(table_uri)).column("reason")
    assert reasons.to_pylist() == ["missing_title: title is null or blank"] * 40

    # An operator who means it: the same run commits an empty table, the quarantine unchanged.
    summary = embed_catalog(
        spark,
        EmbedConfig(
            str(tmp_path / "bad.parquet"), str(tiny_model_dir), table_uri, max_quarantine_share=1
        ),
        progress=quiet,
    )
    assert (summary["embedded"], summary["quarantined"], summary["table_version"]) == (0, 40, 1)
    assert read_table(table_uri).num_rows == 0
    assert read_table(quarantine_uri(table_uri)).num_rows == 40


def cli_error(args: list[str]) -> str:
    result = CliRunner().invoke(cli, ["embed", *args, "--master", "local[2]"])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_schema_problems_stop_with_one_error_naming_the_file(
    spark, tmp_path, world_catalog, tiny_model_dir
):
    table_uri = first_version(spark, tmp_path, world_catalog, tiny_model_dir)
    cases = {
        "no-id": (
            "part.parquet",
            world_catalog.drop_columns(["product_id"]),
            "required column 'product_id' is missing",
        ),
        "mistyped": (
            "part-2.parquet",
            world_catalog.set_column(1, "title", pa.array(range(world_catalog.num_rows))),
            "catalog column 'title' must be string, found int64",
        ),
    }
    for name, (bad_file, table, message) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        pq.write_table(world_catalog, folder / "part-1.parquet")  # a good file beside it
        pq.write_table(table, folder / bad_file)
        error = cli_error(
            ["--catalog", str(folder), "--model", str(tiny_model_dir), "--table", table_uri]
        )
        assert message in error and bad_file in error, error
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    pq.write_table(world_catalog, corrupt / "a.parquet")
    (corrupt / "b.parquet").write_bytes(b"PAR1 this is not parquet")
    error = cli_error(
        ["--catalog", str(corrupt), "--model", str(tiny_model_dir), "--table", table_uri]
    )
    assert error.startswith(f"error: cannot read Parquet at {corrupt / 'b.parquet'}"), error
    with pytest.raises(ContractError):  # the same checks in-process
        embed_catalog(
            spark,
            EmbedConfig(str(tmp_path / "no-id"), str(tiny_model_dir), table_uri),
            progress=quiet,
        )
    assert DeltaTable(table_uri).version() == 0
