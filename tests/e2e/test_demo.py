"""`itemsage demo` end to end on local Spark (a small world, so it runs in about half a minute)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from report_checks import check_report

from itemsage_core.embedding.embeddings_table import read_table

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.spark


def test_demo_runs_every_stage_and_its_commands_work(tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "itemsage_cli.main",
            "demo",
            "--workdir",
            str(tmp_path / "demo"),
            "--products",
            "800",
            "--epochs",
            "1",
            "--master",
            "local[2]",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    out = run.stdout
    for stage in range(1, 7):
        assert f"stage {stage}/6" in run.stderr
    assert re.search(
        r"^== embeddings of \S+: 800 products, 0 quarantined, table version 0", out, re.M
    )
    for surface in ("home", "closeup", "search"):
        assert re.search(rf"^  {surface} +published: \d+ products", out, re.M), out
    # 3 query products, each followed by 5 neighbours with a cosine, an id, a title, a category.
    assert len(re.findall(r"^  P\d{8}  .+  \[.+\]$", out, re.M)) == 3
    assert len(re.findall(r"^    [01]\.\d{3}  P\d{8}  .+  \[.+\]$", out, re.M)) == 15
    world = pq.read_table(tmp_path / "demo" / "world" / "catalog", columns=["product_id", "brand"])
    brand = dict(zip(world.column(0).to_pylist(), world.column(1).to_pylist()))
    assert re.search(r"^  closeup .+, none sharing its brand$", out, re.M), out
    for surface in ("home", "closeup", "search"):  # every product's neighbours, per surface
        assert re.search(rf"^  {surface} +\d+ products x top 10 \(version 0\)", out, re.M), out
        served = int(re.search(rf"^  {surface} +published: (\d+) products", out, re.M).group(1))
        rows = read_table(str(tmp_path / "demo" / "tables" / "neighbours" / surface)).to_pylist()
        assert len({r["product_id"] for r in rows}) == len(rows) == served
        for row in rows:
            found = [n["product_id"] for n in row["neighbours"]]
            scores = [n["score"] for n in row["neighbours"]]
            assert len(found) == 10 and row["product_id"] not in found
            assert scores == sorted(scores, reverse=True)
            if surface == "closeup":  # conf/surfaces.toml: neighbours_exclude_same = ["brand"]
                assert all(brand[p] != brand[row["product_id"]] for p in found)
    for name in ("world", "model", "embeddings", "quarantine", "indexes", "neighbours", "report"):
        assert re.search(rf"^  {name} +\S", out, re.M)
    demo = tmp_path / "demo"
    page = re.search(r"^== run report .*: file://(\S+)$", out, re.M).group(1)
    assert Path(page) == demo / "indexes" / "_report" / "index.html"
    check_report(Path(page).parent, demo / "indexes", model=True)
    # The printed report command works as printed, with the table's default from the manifests.
    command = next(line.strip() for line in out.splitlines() if "itemsage report" in line)
    args = shlex.split(command)[1:]
    args = args[: args.index("--table")] + ["--out", str(tmp_path / "again"), "--surface", "home"]
    rerun = subprocess.run(
        [sys.executable, "-m", "itemsage_cli.main", *args], capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert rerun.stdout.strip() == f"report: {tmp_path / 'again' / 'index.html'}"
    again = check_report(tmp_path / "again", demo / "indexes", model=False)
    assert list(again["surfaces"]) == ["home"]
    # The printed query command works as printed.
    query = next(line.strip() for line in out.splitlines() if "itemsage query" in line)
    args = shlex.split(query)[1:]
    rerun = subprocess.run(
        [sys.executable, "-m", "itemsage_cli.main", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.startswith('[{"product_id": "P')
    assert '"title": ' in rerun.stdout and '"product_type": ' in rerun.stdout


def test_demo_on_the_flipkart_catalog(tmp_path, flipkart_path, minilm_dir):
    """The real-catalog recipe, featurize first, on 3,000 Flipkart rows (one repeated pid)."""
    conf = ROOT / "conf"
    catalog = tmp_path / "flipkart-slice.parquet"
    pq.write_table(pq.read_table(flipkart_path).slice(6000, 3000), catalog)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "itemsage_cli.main",
            "demo",
            "--workdir",
            str(tmp_path / "demo"),
            "--products",
            "800",
            "--epochs",
            "1",
            "--master",
            "local[2]",
            "--catalog",
            str(catalog),
            "--mapping",
            str(conf / "mappings/flipkart.toml"),
            "--surfaces",
            str(conf / "surfaces-flipkart.toml"),
            "--label-column",
            "product_type",
            "--text-model",
            str(minilm_dir),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert re.search(r"featurized 2998 products into .*; 2 rows quarantined; 384-d", run.stderr)
    assert "2998 products, 0 quarantined" in run.stdout  # featurize quarantined the 2
    assert len(re.findall(r"^    [01]\.\d{3}  [A-Z0-9]{16}  .+  \[.*\]$", run.stdout, re.M)) == 15
    assert "trained on" in run.stdout and "--engagements" not in run.stdout
    assert re.search(r"^ +label +itemsage +tfidf +all-MiniLM-L6-v2 +random$", run.stdout, re.M), (
        run.stdout
    )
    assert re.search(r"^  top level( +[01]\.\d{3}){4}$", run.stdout, re.M)
    featurized = tmp_path / "demo" / "featurized"
    commands = [line.strip() for line in run.stdout.splitlines() if "itemsage " in line]
    assert any(
        c.startswith(f"itemsage featurize --catalog {catalog}") and f"--out {featurized}" in c
        for c in commands
    )
    assert any(
        c.startswith("itemsage evaluate-catalog")
        and f"--mapping {featurized}/mapping.toml" in c
        and f"--baseline-model {minilm_dir}" in c
        for c in commands
    )
