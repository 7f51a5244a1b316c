"""Local paths and URIs with a scheme (s3://, gs://, file://, ...)."""

from __future__ import annotations

import os


def is_local_path(uri: str) -> bool:
    """True for a filesystem path, False for a URI with a scheme (s3://, gs://, file://, ...)."""
    return "://" not in uri


def absolute_uri(uri: str) -> str:
    """A local path made absolute (so that records of it stay valid from any directory); a URI
    with a scheme unchanged."""
    return os.path.abspath(uri) if is_local_path(uri) else uri
