"""The Airflow DAGs: they import under a real Airflow with the expected tasks, dependencies,
retries and timeouts, and their commands pass every value as one argument (no shell parsing).

Airflow lives in its own virtualenv (`make airflow-venv`, as a scheduler would run the DAG file);
ITEMSAGE_AIRFLOW_PYTHON names its interpreter. Without it the import test is skipped with that
reason, and the structural test below still runs.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAG_FILE = ROOT / "airflow" / "dags" / "itemsage_dags.py"
AIRFLOW_PYTHON = os.environ.get("ITEMSAGE_AIRFLOW_PYTHON", str(ROOT / ".venv-airflow/bin/python"))

INSPECT = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("itemsage_dags", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
out = {}
for dag in (module.nightly, module.rebuild):
    out[dag.dag_id] = {
        "schedule": str(getattr(dag, "schedule", None) or getattr(dag, "schedule_interval", None)),
        "params": sorted(dag.params.keys()),
        "tasks": {t.task_id: {"upstream": sorted(t.upstream_task_ids), "retries": t.retries,
                              "timeout_s": t.execution_timeout.total_seconds(),
                              "command": t.bash_command, "env": t.env,
                              "trigger_rule": str(t.trigger_rule)}
                  for t in dag.tasks}}
print(json.dumps(out))
"""


def airflow_available() -> bool:
    if not Path(AIRFLOW_PYTHON).exists():
        return False
    return (
        subprocess.run([AIRFLOW_PYTHON, "-c", "import airflow"], capture_output=True).returncode
        == 0
    )


@pytest.fixture(scope="module")
def dags(tmp_path_factory):
    if not airflow_available():
        pytest.skip(f"no Airflow at {AIRFLOW_PYTHON} (make airflow-venv installs it)")
    home = tmp_path_factory.mktemp("airflow-home")
    run = subprocess.run(
        [AIRFLOW_PYTHON, "-c", INSPECT, str(DAG_FILE)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "false"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_nightly_dag_embeds_then_builds_verifies_and_lists_neighbours_of_each_surface(dags):
    nightly = dags["itemsage_nightly"]["tasks"]
    assert dags["itemsage_nightly"]["schedule"] == "0 2 * * *"
    assert nightly["embed_incremental"]["upstream"] == []
    for surface in ("home", "closeup", "search"):
        assert nightly[f"build_index_{surface}"]["upstream"] == ["embed_incremental"]
        assert nightly[f"verify_{surface}"]["upstream"] == [f"build_index_{surface}"]
        assert nightly[f"neighbours_{surface}"]["upstream"] == [f"verify_{surface}"]
        assert nightly[f"build_index_{surface}"]["env"]["SURFACE"] == surface
        assert nightly[f"neighbours_{surface}"]["env"]["SURFACE"] == surface
    assert nightly["report"]["upstream"] == [
        f"neighbours_{s}" for s in ("closeup", "home", "search")
    ]
    assert nightly["report"]["trigger_rule"].lower().endswith("all_done")  # shows what is published
    assert "report --index" in nightly["report"]["command"]
    assert len(nightly) == 11
    assert "--incremental" in nightly["embed_incremental"]["command"]
    for surface in ("home", "closeup", "search"):
        assert nightly[f"build_index_{surface}"]["env"]["BUILD_MODE"] == "--incremental"
    for task in nightly.values():
        assert task["retries"] == 2 and 0 < task["timeout_s"] <= 4 * 3600


def test_rebuild_dag_takes_a_surface_and_a_pinned_version(dags):
    rebuild = dags["itemsage_rebuild"]
    assert rebuild["schedule"] == "None"
    assert rebuild["params"] == ["surface", "table_version"]
    assert rebuild["tasks"]["verify"]["upstream"] == ["build_index"]
    assert "--table-version" in rebuild["tasks"]["build_index"]["command"]
    assert rebuild["tasks"]["build_index"]["env"]["BUILD_MODE"] == "--full"


def test_commands_pass_values_as_single_arguments(dags, tmp_path):
    """Run each command with bash, ITEMSAGE_HOME holding a spark-submit.sh that records its
    arguments, and hostile values in the environment: each value arrives as one argument."""
    home = tmp_path / "home"
    (home / ".venv/bin").mkdir(parents=True)
    recorder = "#!/usr/bin/env python3\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n"
    for script in (home / "spark-submit.sh", home / ".venv/bin/itemsage"):
        script.write_text(recorder)
        script.chmod(0o755)
    marker = tmp_path / "injected"
    hostile = f"/data/x; touch {marker} $(touch {marker}) `touch {marker}`"
    values = {
        "ITEMSAGE_HOME": str(home),
        "CATALOG": hostile,
        "MAPPING": "",
        "MODEL": "/m",
        "TABLE": "/t",
        "SURFACES_TOML": "/s.toml",
        "INDEX_ROOT": "/i",
        "NEIGHBOURS_ROOT": hostile,
        "SURFACE": "home",
        "RUN_ID": "nightly-20261125",
        "TABLE_VERSION": "3",
        "BUILD_MODE": "--full",
        "PATH": os.environ["PATH"],
    }
    tasks = {**dags["itemsage_nightly"]["tasks"], **dags["itemsage_rebuild"]["tasks"]}
    for name, task in tasks.items():
        run = subprocess.run(
            ["bash", "-c", task["command"]], env=values, capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 0, (name, run.stderr)
        args = json.loads(run.stdout)
        if "neighbours" in args:
            assert args[args.index("--out") + 1] == hostile
            assert args[args.index("--surfaces") + 1] == "/s.toml"  # its exclude_same filters
        if "--catalog" in args:
            assert args[args.index("--catalog") + 1] == hostile
        if "report" in args:
            assert args[args.index("--index") + 1] == "/i" and "--out" not in args
        assert "--mapping" not in args  # empty MAPPING: no flag
    assert not marker.exists()
    build = json.loads(
        subprocess.run(
            ["bash", "-c", tasks["build_index"]["command"]],
            env=values,
            capture_output=True,
            text=True,
        ).stdout
    )
    assert build[build.index("--table-version") + 1] == "3"


def test_dag_file_structure_without_airflow():
    """What can be checked without Airflow: the file parses, declares both DAGs, and builds
    every shell command from quoted environment variables only (no Jinja inside commands)."""
    tree = ast.parse(DAG_FILE.read_text())
    dag_ids = {
        kw.value.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        for kw in node.keywords
        if kw.arg == "dag_id"
    }
    assert dag_ids == {"itemsage_nightly", "itemsage_rebuild"}
    commands = {
        node.targets[0].id: ast.literal_eval(node.value)
        if isinstance(node.value, ast.Constant)
        else None
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id in {"SUBMIT", "MAPPING_ARG", "VERIFY", "REPORT"}
    }
    for name, text in commands.items():
        assert text is not None and "{{" not in text, name
