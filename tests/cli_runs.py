"""Running the CLI as a user does, in a subprocess of this interpreter."""

from __future__ import annotations

import subprocess
import sys


def itemsage(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """`itemsage ARGS...`: its exit status, stdout and stderr."""
    return subprocess.run(
        [sys.executable, "-m", "itemsage_cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
