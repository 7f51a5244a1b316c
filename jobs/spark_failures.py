"""A failed Spark stage as one clear line: its root cause, not a JVM stack of 200 lines.

Spark has already logged the full task traceback (log4j `ERROR Executor: Exception in task`);
the job's own error names the cause (the Python exception a task raised, or the deepest JVM
`Caused by:`) and what the failure left behind.
"""

from __future__ import annotations

import contextlib
import re

from itemsage_core.errors import ItemSageError

_PYTHON_ERROR = re.compile(r"^([A-Za-z_][\w.]*): (.*)$", re.M)  # unindented, after the frames
_CAUSED_BY = re.compile(r"^Caused by: [\w.$]+: (?!Traceback)(.+)$", re.M)
_TRACEBACK = "Traceback (most recent call last)"
_OUT_OF_MEMORY = re.compile(r"java\.lang\.OutOfMemoryError: [^\n]*")


def root_cause(exc: BaseException) -> str:
    """A JVM out of memory (with the setting to raise), else the Python exception of the last
    task traceback in `exc`, else the deepest JVM cause, else the first line of the message."""
    text = str(exc)
    memory = _OUT_OF_MEMORY.search(text)
    if memory:
        return (
            f"a Spark JVM ran out of memory ({memory.group(0).strip()}): raise "
            "spark.driver.memory (local[*]) or spark.executor.memory, e.g. "
            "--conf spark.driver.memory=8g"
        )
    for tail in reversed(text.split(_TRACEBACK)[1:]):  # the last traceback that has an error
        found = _PYTHON_ERROR.search(tail)
        if found:
            return f"{found.group(1).rsplit('.', 1)[-1]}: {found.group(2).strip()}"
    causes = _CAUSED_BY.findall(text)
    if causes:
        return causes[-1].strip()
    lines = text.strip().splitlines()
    return lines[0] if lines else type(exc).__name__


@contextlib.contextmanager
def spark_failures(what: str, left_behind: str):
    """Turn a Spark job failure inside the block into ItemSageError("<what> failed: <cause>;
    <left_behind>")."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    try:
        yield
    except (Py4JJavaError, PySparkException) as exc:
        raise ItemSageError(f"{what} failed: {root_cause(exc)}; {left_behind}") from None
