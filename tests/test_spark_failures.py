"""A failed Spark stage's text reduced to its root cause (jobs/spark_failures.py)."""

from __future__ import annotations

from jobs.spark_failures import root_cause

PYTHON_TASK = """An exception was thrown from the Python worker. Please see the stack trace below.
Traceback (most recent call last):
  File "/x/worker.py", line 1, in main
    process()
pyarrow.lib.ArrowInvalid: Parquet page header is corrupt
\tat org.apache.spark.api.python.BasePythonRunner.handlePythonException(PythonRunner.scala:1)
Caused by: org.apache.spark.api.python.PythonException: Traceback (most recent call last):
"""
CHAINED = """Traceback (most recent call last):
  File "a.py", line 1, in f
OSError: first
During handling of the above exception, another exception occurred:
Traceback (most recent call last):
  File "a.py", line 2, in g
itemsage_core.errors.ContractError: catalog column 'title' must be string
"""
JVM = """Job aborted due to stage failure: Task 1 in stage 2.0 failed 1 times
org.apache.spark.SparkException: [FAILED_READ_FILE.NO_HINT] Encountered error while reading file
Caused by: org.apache.spark.SparkException: [FAILED_READ_FILE.NO_HINT] reading file b.parquet
Caused by: java.lang.RuntimeException: b.parquet is not a Parquet file
\tat org.apache.parquet.hadoop.ParquetFileReader.readFooter(ParquetFileReader.java:1)
"""


def test_root_causes():
    assert root_cause(Exception(PYTHON_TASK)) == "ArrowInvalid: Parquet page header is corrupt"
    assert root_cause(Exception(CHAINED)) == (
        "ContractError: catalog column 'title' must be string"
    )
    assert root_cause(Exception(JVM)) == "b.parquet is not a Parquet file"
    assert root_cause(Exception("one line\nmore")) == "one line"
    assert root_cause(ValueError("")) == "ValueError"


def test_an_out_of_memory_jvm_names_the_setting_to_raise():
    text = (
        "An error occurred while calling o542.parquet.\n: org.apache.spark.SparkException: Job "
        "aborted due to stage failure: Lost task 1.0 in stage 12.0 (TID 40) (127.0.0.1 executor "
        "driver): java.lang.OutOfMemoryError: Java heap space\n\tat java.base/x.y(Z.java:1)\n"
    )
    assert root_cause(Exception(text)) == (
        "a Spark JVM ran out of memory (java.lang.OutOfMemoryError: Java heap space): raise "
        "spark.driver.memory (local[*]) or spark.executor.memory, e.g. "
        "--conf spark.driver.memory=8g"
    )
