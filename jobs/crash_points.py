"""Named points where a test can SIGKILL a run, to prove what a crash there leaves behind.

Set ITEMSAGE_CRASH_AT=<point> in the run's environment; the process kills itself with SIGKILL
(no cleanup, no finally blocks) when it reaches that point. A point reached in an executor
(SESSION_POINTS) kills the whole run instead, as a lost machine would: the process groups of its
session (the driver and its JVM) and of the executor's own (Spark's Python workers); start such
a run in its own session. Unset, this does nothing.
"""

from __future__ import annotations

import os
import signal

ENV = "ITEMSAGE_CRASH_AT"
POINTS = ("before_write", "after_write", "before_commit")
SESSION_POINTS = ("between_shard_uploads",)


def crash_point(name: str) -> None:
    assert name in POINTS + SESSION_POINTS, name
    if os.environ.get(ENV) != name:
        return
    if name in SESSION_POINTS:
        os.killpg(os.getsid(0), signal.SIGKILL)
        os.killpg(os.getpgrp(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
