"""Progress lines on stderr, the one way every command reports what it is doing."""

from __future__ import annotations

import time

import click


def progress(message: str) -> None:
    """A progress line on stderr (stdout stays clean for --json output)."""
    click.echo(f"[itemsage {time.strftime('%H:%M:%S')}] {message}", err=True)
