"""The one SparkSession factory every job uses.

Defaults give a working embedded Spark (`local[*]`) on a laptop; under spark-submit the master and
conf given there win, and `--master` / `--conf k=v` from the CLI override both.

Spark's console log level is $ITEMSAGE_SPARK_LOG_LEVEL, else ERROR (`itemsage --verbose`: WARN).
At ERROR or quieter, a driver JVM started here logs errors only from its start on, and PySpark's
JSON re-logging of every analysis error (with its JVM stack) is off.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from pyspark import SparkConf
from pyspark.logger import PySparkLogger
from pyspark.sql import SparkSession

from itemsage_core.errors import ItemSageError

DEFAULT_MASTER = "local[*]"
LOG_LEVEL = "ITEMSAGE_SPARK_LOG_LEVEL"
QUIET_LEVELS = ("ERROR", "FATAL", "OFF")
QUIET_LOG4J = Path(__file__).with_name("log4j2-quiet.properties")
# PySpark loggers that log each analysis error again, as JSON with the JVM stack trace.
QUERY_CONTEXT_LOGGERS = ("SQLQueryContextLogger", "DataFrameQueryContextLogger")

# Defaults for every session; each can be overridden by spark-submit or --conf.
DEFAULT_CONF = {
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.pyspark.fallback.enabled": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.adaptive.enabled": "true",
    # Spark's bar redraws one line: useful in a terminal, noise in cron and Airflow logs (the
    # jobs print their own progress lines there).
    "spark.ui.showConsoleProgress": str(sys.stderr.isatty()).lower(),
}
# Extra defaults for the embedded (local) mode: a driver JVM sized for a laptop, loopback only.
LOCAL_CONF = {
    "spark.driver.memory": "4g",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.sql.shuffle.partitions": str(max(4, 2 * (os.cpu_count() or 1))),
}


def parse_conf(pairs: Iterable[str]) -> dict[str, str]:
    """`k=v` strings (from repeated --conf flags) to a dict; a malformed pair is a user error."""
    conf = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ItemSageError(f"--conf expects key=value, got {pair!r}")
        conf[key.strip()] = value
    return conf


def log_level() -> str:
    """Spark's console log level: $ITEMSAGE_SPARK_LOG_LEVEL, else ERROR."""
    return os.environ.get(LOG_LEVEL, "ERROR").upper()


def under_spark_submit() -> bool:
    """True when this driver was launched by spark-submit (the JVM is already configured)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def session_conf(
    master: str | None = None,
    conf: Mapping[str, str] | None = None,
    submitted: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The conf the factory sets. Precedence: `master`/`conf` (the CLI) over `submitted` (what
    spark-submit already set, None when not under spark-submit) over the defaults."""
    out: dict[str, str] = {}
    if submitted is None:
        out.update(DEFAULT_CONF)
        out["spark.master"] = master or DEFAULT_MASTER
        # Executors must run this interpreter, or they may lack pyarrow / torch.
        out["spark.pyspark.python"] = sys.executable
        out["spark.pyspark.driver.python"] = sys.executable
        if out["spark.master"].startswith("local"):
            out.update(LOCAL_CONF)
        if log_level() in QUIET_LEVELS:
            out["spark.driver.extraJavaOptions"] = (
                f"-Dlog4j2.configurationFile={QUIET_LOG4J.as_uri()}"
            )
    else:
        out.update({k: v for k, v in DEFAULT_CONF.items() if k not in submitted})
        if master:
            out["spark.master"] = master
    out.update(conf or {})
    return out


def get_spark(
    app_name: str = "itemsage", master: str | None = None, conf: Mapping[str, str] | None = None
) -> SparkSession:
    """Get or create the SparkSession for a job (see module docstring for precedence)."""
    submitted = dict(SparkConf().getAll()) if under_spark_submit() else None
    settings = session_conf(master, conf, submitted)
    if submitted is None:
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # JVM missing or failing to start: say what to do.
        if "JAVA_GATEWAY_EXITED" in str(exc) or "Java gateway" in str(exc):
            raise ItemSageError(
                "could not start Spark's JVM: install Java 17+ and make sure "
                "`java` is on PATH or JAVA_HOME is set"
            ) from None
        raise
    level = log_level()
    spark.sparkContext.setLogLevel(level)
    for name in QUERY_CONTEXT_LOGGERS:
        PySparkLogger.getLogger(name).setLevel(
            logging.CRITICAL if level in QUIET_LEVELS else logging.WARNING
        )
    return spark


def task_device() -> str:
    """Inside a Spark task: the GPU Spark gave it, else CUDA if visible, else the CPU
    (inference.device_for_task)."""
    from pyspark import TaskContext

    from itemsage_core.model.inference import device_for_task

    context = TaskContext.get()
    gpus = context.resources().get("gpu") if context else None
    return device_for_task(list(gpus.addresses) if gpus else [])


def task_slot() -> tuple[int, str, str | None]:
    """Inside a Spark task: its cores (threads to use), its attempt id (unique in the
    application, "" outside Spark) and Spark's local directory for scratch files (SPARK_LOCAL_DIRS,
    set for Python workers; None: the system's temporary directory)."""
    from pyspark import TaskContext

    context = TaskContext.get()
    threads = max(1, context.cpus() if context else 1)
    attempt = str(context.taskAttemptId()) if context else ""
    return threads, attempt, (os.environ.get("SPARK_LOCAL_DIRS") or "").split(",")[0] or None
