"""What every recipe that starts Spark shares: the session from --master and --conf, and the
progress callback type."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str], None]  # one line of progress (the CLI prints it on stderr)


def silent(message: str) -> None:
    """A recipe's progress when its caller wants none: the jobs call progress unguarded."""


def spark_session(app: str, master: str | None, conf: tuple[str, ...] = ()):
    """The Spark session of `app` on `master` with KEY=VALUE `conf` settings."""
    from jobs.spark_session import get_spark, parse_conf

    return get_spark(app, master, parse_conf(conf))
