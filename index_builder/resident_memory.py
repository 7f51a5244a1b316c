"""Resident memory a load adds to this process, measured (a shard's `resident_bytes`)."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
from collections.abc import Callable


def _rss() -> int | None:
    """This process's resident bytes (Linux), None elsewhere."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return None


def measured_load(load: Callable[[], object]) -> tuple[object, int | None]:
    """`load()`, and the resident bytes it added to the process (freed memory is handed back
    to the system first, so the figure is what the load allocated)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = _rss()
    loaded = load()
    after = _rss()
    return loaded, None if before is None or after is None else max(0, after - before)
