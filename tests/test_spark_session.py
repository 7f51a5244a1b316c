"""The SparkSession factory: defaults, precedence, and executors running this interpreter."""

from __future__ import annotations

import sys

import pytest

from itemsage_core.errors import ItemSageError
from jobs.spark_session import QUIET_LOG4J, log_level, parse_conf, session_conf


def test_embedded_defaults():
    conf = session_conf()
    assert conf["spark.master"] == "local[*]"
    assert conf["spark.pyspark.python"] == sys.executable
    assert conf["spark.sql.execution.arrow.pyspark.enabled"] == "true"
    assert conf["spark.driver.memory"] == "4g"


def test_master_and_conf_override_defaults():
    conf = session_conf("spark://127.0.0.1:7077", {"spark.driver.memory": "8g"})
    assert conf["spark.master"] == "spark://127.0.0.1:7077"
    assert conf["spark.driver.memory"] == "8g"
    assert "spark.driver.host" not in conf  # loopback defaults are for local mode only


def test_under_spark_submit_its_conf_wins_over_defaults():
    submitted = {"spark.master": "yarn", "spark.sql.session.timeZone": "Europe/Paris"}
    conf = session_conf(submitted=submitted)
    assert "spark.master" not in conf and "spark.driver.memory" not in conf
    assert "spark.sql.session.timeZone" not in conf
    assert conf["spark.sql.execution.arrow.pyspark.enabled"] == "true"
    explicit = session_conf("local[2]", {"spark.sql.session.timeZone": "UTC"}, submitted)
    assert explicit["spark.master"] == "local[2]"
    assert explicit["spark.sql.session.timeZone"] == "UTC"


def test_spark_logs_errors_only_unless_a_level_is_set(monkeypatch):
    monkeypatch.delenv("ITEMSAGE_SPARK_LOG_LEVEL", raising=False)
    assert log_level() == "ERROR" and QUIET_LOG4J.is_file()
    assert session_conf()["spark.driver.extraJavaOptions"] == (
        f"-Dlog4j2.configurationFile={QUIET_LOG4J.as_uri()}"
    )
    assert "spark.driver.extraJavaOptions" not in session_conf(submitted={})  # spark-submit's JVM
    monkeypatch.setenv("ITEMSAGE_SPARK_LOG_LEVEL", "warn")
    assert log_level() == "WARN" and "spark.driver.extraJavaOptions" not in session_conf()


def test_parse_conf():
    assert parse_conf(["a=b", "c.d=e=f"]) == {"a": "b", "c.d": "e=f"}
    with pytest.raises(ItemSageError, match="--conf expects key=value"):
        parse_conf(["novalue"])


@pytest.mark.spark
def test_executors_run_this_interpreter_with_arrow(spark):
    import pyarrow as pa

    def where(batches):
        import sys as executor_sys

        for batch in batches:
            yield pa.RecordBatch.from_pydict({"python": [executor_sys.executable] * batch.num_rows})

    pythons = {
        r.python
        for r in spark.range(4, numPartitions=2).mapInArrow(where, "python string").collect()
    }
    assert pythons == {sys.executable}
    assert spark.conf.get("spark.sql.execution.arrow.pyspark.enabled") == "true"
