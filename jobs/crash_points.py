"""Named points where a test can SIGKILL a run, to prove what a crash there leaves behind.

Set ITEMSAGE_CRASH_AT=<point> in the run's environment; the process kills itself with SIGKILL
(no cleanup, no finally blocks) when it reaches that point. A point reached in an executor
(GROUP_POINTS) kills the whole process group instead: the driver, its JVM and every worker of a
run started in its own session, as a lost machine would. Unset, this does nothing.
"""

from __future__ import annotations

import os
import signal

ENV = "ITEMSAGE_CRASH_AT"
POINTS = ("before_write", "after_write", "before_commit")
GROUP_POINTS = ("between_shard_uploads",)


def crash_point(name: str) -> None:
    assert name in POINTS + GROUP_POINTS, name
    if os.environ.get(ENV) != name:
        return
    if name in GROUP_POINTS:
        os.killpg(os.getpgrp(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
