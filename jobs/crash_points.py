"""Named points where a test can SIGKILL the driver, to prove what a crash there leaves behind.

Set ITEMSAGE_CRASH_AT=<point> in the driver's environment; the process kills itself with
SIGKILL (no cleanup, no finally blocks) when it reaches that point. Unset, this does nothing.
"""

from __future__ import annotations

import os
import signal

ENV = "ITEMSAGE_CRASH_AT"
POINTS = ("before_write", "after_write", "before_commit")


def crash_point(name: str) -> None:
    assert name in POINTS, name
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
