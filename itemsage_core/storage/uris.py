"""Local paths and URIs with a scheme (s3://, gs://, file://, ...)."""

from __future__ import annotations

import os

# Object stores (S3, GCS, Azure): no rename, no Hadoop connector needed to read them from Python.
OBJECT_STORES = ("s3", "s3a", "gs", "gcs", "abfs", "abfss", "az")


def is_local_path(uri: str) -> bool:
    """True for a filesystem path, False for a URI with a scheme (s3://, gs://, file://, ...)."""
    return "://" not in uri


def scheme(uri: str) -> str:
    """The URI's scheme, lower case; `file` for a local path."""
    return uri.split("://", 1)[0].lower() if "://" in uri else "file"


def is_object_store(uri: str) -> bool:
    return scheme(uri) in OBJECT_STORES


def absolute_uri(uri: str) -> str:
    """A local path made absolute (so that records of it stay valid from any directory); a URI
    with a scheme unchanged."""
    return os.path.abspath(uri) if is_local_path(uri) else uri


def sibling(uri: str, suffix: str) -> str:
    """The path or URI beside `uri` whose name is uri's name plus `suffix`
    (`s3://lake/models/m1` -> `s3://lake/models/m1.state`)."""
    return uri.rstrip("/") + suffix
