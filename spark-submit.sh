#!/usr/bin/env bash
# Submit an ItemSage job to Spark: local, standalone, YARN or Kubernetes.
#
#   ./spark-submit.sh [--master URL] [--conf KEY=VALUE ...] [--dry-run] JOB [JOB ARGS...]
#
# JOB: validate, embed, build-index, neighbours, prepare-training or train (each takes the
# `itemsage JOB` options). The master comes from --master, else $SPARK_MASTER, else local[*].
# The project is shipped to executors as a zip (--py-files); their Python (with the dependencies
# installed) is $PYSPARK_PYTHON, else the driver's: $PYSPARK_DRIVER_PYTHON, else this project's
# .venv.
# README: packed environments.
# The exact spark-submit command is printed before it runs; arguments are passed as an array,
# never through a shell string, so job arguments cannot inject commands. (spark-submit merges the
# Python driver's stderr into stdout: progress and error lines arrive on stdout.)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() { sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

master=${SPARK_MASTER:-local[*]}
confs=()
dry_run=0
while [ $# -gt 0 ]; do
  case "$1" in
    --master) master=${2:?--master needs a URL}; shift 2 ;;
    --conf) confs+=(--conf "${2:?--conf needs KEY=VALUE}"); shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "spark-submit.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { usage >&2; exit 2; }
job=$1; shift
case "$job" in
  validate|embed|build-index|neighbours|prepare-training|train) entry="$HERE/itemsage_cli/spark_entry.py" ;;
  *) echo "spark-submit.sh: unknown job '$job' (jobs: validate, embed, build-index, neighbours, prepare-training, train)" >&2; exit 2 ;;
esac

# The driver's Python (this machine) and the executors' (the same unless PYSPARK_PYTHON names
# another, e.g. ./environment/bin/python inside a packed environment shipped with --archives).
driver_python=${PYSPARK_DRIVER_PYTHON:-}
if [ -z "$driver_python" ]; then
  if [ -x "$HERE/.venv/bin/python" ]; then driver_python="$HERE/.venv/bin/python"; else driver_python=$(command -v python3); fi
fi
python=${PYSPARK_PYTHON:-$driver_python}
if [ -n "${SPARK_HOME:-}" ] && [ -x "$SPARK_HOME/bin/spark-submit" ]; then
  submit="$SPARK_HOME/bin/spark-submit"
elif [ -x "$HERE/.venv/bin/spark-submit" ]; then
  submit="$HERE/.venv/bin/spark-submit"
else
  submit=$(command -v spark-submit) || { echo "spark-submit.sh: spark-submit not found (run make venv or set SPARK_HOME)" >&2; exit 1; }
fi

# The project's packages, zipped for the executors.
pyfiles=$(mktemp -d)/itemsage.zip
trap 'rm -rf "$(dirname "$pyfiles")"' EXIT
(cd "$HERE" && "$driver_python" - "$pyfiles" <<'PY'
import pathlib, sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as z:
    for package in ("itemsage_core", "itemsage_runs", "itemsage_cli", "itemsage_report", "jobs", "index_builder"):
        for path in sorted(pathlib.Path(package).rglob("*.py")):
            z.write(path)
PY
)

cmd=("$submit" --master "$master" --name "itemsage-$job"
     --conf "spark.pyspark.python=$python" --conf "spark.pyspark.driver.python=$driver_python"
     --conf "spark.sql.execution.arrow.pyspark.enabled=true" --conf "spark.log.level=WARN"
     ${confs[@]+"${confs[@]}"}
     --py-files "$pyfiles" "$entry" "$job" "$@")
printf 'spark-submit.sh: running:'; printf ' %q' "${cmd[@]}"; printf '\n'
[ "$dry_run" -eq 1 ] && exit 0
PYSPARK_PYTHON="$python" PYSPARK_DRIVER_PYTHON="$driver_python" "${cmd[@]}"
