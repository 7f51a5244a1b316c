"""Airflow DAGs for ItemSage: the nightly refresh and an ad hoc rebuild of one surface.

- `itemsage_nightly` (daily): incremental embed -> incremental build-index for each surface (in
  parallel, each publishes atomically after its recall gate) -> verify what serving will load
  -> the surface's neighbours table (every product's top 10, less its configured
  neighbours_exclude_same matches, one Delta commit per build) -> once every surface is done
  (succeeded or not), the run report (`itemsage report`) into INDEX_ROOT/_report.
- `itemsage_rebuild` (manual trigger): a full build-index of one surface, optionally from a pinned
  Delta version (`table_version`), -> verify.

Every task runs `spark-submit.sh`. Values (paths, params) reach it through environment
variables that the command quotes ("$VAR"), so no value is ever parsed by the shell: a catalog
path or a surface name cannot inject commands. Configure with Airflow Variables (or the
defaults below): itemsage_home (the project checkout), itemsage_catalog, itemsage_mapping,
itemsage_model, itemsage_table, itemsage_surfaces, itemsage_index_root, itemsage_neighbours,
itemsage_spark_master.
Tables and indexes live on an object store by default (no shared mount between the Airflow
worker, the driver and the executors); credentials come from each machine's environment.
docs/airflow.md has the recipe.
"""

from __future__ import annotations

import datetime as dt

try:  # Airflow 3
    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.sdk import DAG, Param
except ImportError:  # Airflow 2.x
    from airflow import DAG
    from airflow.models.param import Param
    from airflow.operators.bash import BashOperator

SURFACES = ("home", "closeup", "search")  # one build task per surface in conf/surfaces.toml
RETRIES = {"retries": 2, "retry_delay": dt.timedelta(minutes=10)}
TIMEOUTS = {"embed": dt.timedelta(hours=4), "build": dt.timedelta(hours=2),
            "verify": dt.timedelta(minutes=15), "report": dt.timedelta(minutes=30)}


def _var(name: str, default: str) -> str:
    """A Jinja reference to an Airflow Variable, rendered when the task runs (not at parse)."""
    return "{{ var.value.get('itemsage_%s', '%s') }}" % (name, default)


ENV = {
    "ITEMSAGE_HOME": _var("home", "/opt/itemsage"),
    "SPARK_MASTER": _var("spark_master", "local[*]"),
    "CATALOG": _var("catalog", "s3://itemsage/catalog"),
    "MAPPING": _var("mapping", ""),
    "MODEL": _var("model", "s3://itemsage/models/current"),
    "TABLE": _var("table", "s3://itemsage/tables/embeddings"),
    "SURFACES_TOML": _var("surfaces", "/opt/itemsage/conf/surfaces.toml"),
    "INDEX_ROOT": _var("index_root", "s3://itemsage/indexes"),
    "NEIGHBOURS_ROOT": _var("neighbours", "s3://itemsage/tables/neighbours"),
}
SUBMIT = '"$ITEMSAGE_HOME/spark-submit.sh"'
MAPPING_ARG = '${MAPPING:+--mapping "$MAPPING"}'
EMBED = (f'{SUBMIT} embed --catalog "$CATALOG" {MAPPING_ARG} --model "$MODEL" --table "$TABLE" '
         '--incremental --run-id "$RUN_ID"')
BUILD = (f'{SUBMIT} build-index --table "$TABLE" --surfaces "$SURFACES_TOML" '
         f'--out "$INDEX_ROOT" --catalog "$CATALOG" {MAPPING_ARG} --surface "$SURFACE" '
         '${TABLE_VERSION:+--table-version "$TABLE_VERSION"} "$BUILD_MODE"')
VERIFY = '"$ITEMSAGE_HOME/.venv/bin/itemsage" verify-index --index "$INDEX_ROOT" --surface "$SURFACE"'
NEIGHBOURS = (f'{SUBMIT} neighbours --index "$INDEX_ROOT" --surface "$SURFACE" '
              f'--out "$NEIGHBOURS_ROOT" --surfaces "$SURFACES_TOML" --catalog "$CATALOG" '
              f'{MAPPING_ARG}')  # the surface's neighbours_exclude_same filters
REPORT = ('"$ITEMSAGE_HOME/.venv/bin/itemsage" report --index "$INDEX_ROOT" --table "$TABLE" '
          '--model "$MODEL"')  # into INDEX_ROOT/_report, beside the surfaces



def _task(task_id: str, command: str, timeout: str, trigger_rule: str = "all_success",
          **env: str) -> BashOperator:
    return BashOperator(task_id=task_id, bash_command=command, env={**ENV, **env},
                        append_env=True, execution_timeout=TIMEOUTS[timeout],
                        trigger_rule=trigger_rule)


with DAG(dag_id="itemsage_nightly", schedule="0 2 * * *",
         start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), catchup=False,
         max_active_runs=1, default_args=RETRIES, tags=["itemsage"],
         doc_md=__doc__) as nightly:
    embed = _task("embed_incremental", EMBED, "embed",
                  RUN_ID="nightly-{{ ds_nodash }}")  # the same run id on a retry: idempotent
    # After every surface, whether or not each succeeded: it shows what is published.
    report = _task("report", REPORT, "report", trigger_rule="all_done")
    for name in SURFACES:
        build = _task(f"build_index_{name}", BUILD, "build", SURFACE=name,
                      BUILD_MODE="--incremental")  # rebuilds by itself when it must
        verify = _task(f"verify_{name}", VERIFY, "verify", SURFACE=name)
        neighbours = _task(f"neighbours_{name}", NEIGHBOURS, "build", SURFACE=name)
        embed >> build >> verify >> neighbours >> report

with DAG(dag_id="itemsage_rebuild", schedule=None,
         start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), catchup=False,
         default_args=RETRIES, tags=["itemsage"], doc_md=__doc__,
         params={"surface": Param("home", type="string", pattern="^[a-z][a-z0-9_-]{0,63}$",
                                  description="the surface to rebuild"),
                 "table_version": Param(None, type=["null", "integer"], minimum=0,
                                        description="Delta version to build from (latest: "
                                                    "empty)")}) as rebuild:
    build = _task("build_index", BUILD, "build", SURFACE="{{ params.surface }}", BUILD_MODE="--full",
                  TABLE_VERSION="{{ params.table_version if params.table_version is not none "
                                "else '' }}")
    verify = _task("verify", VERIFY, "verify", SURFACE="{{ params.surface }}")
    build >> verify
