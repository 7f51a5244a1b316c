"""Helpers of the index tests: unit vectors, product ids, a build's manifest from its shards."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from index_builder.build_release import assemble_manifest
from index_builder.surfaces import Surface


def unit_vectors(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def ids(n: int, prefix: str = "P") -> pa.Array:
    return pa.array([f"{prefix}{i:05d}" for i in range(n)])


def manifest_for(
    surface: Surface, build_id: str, entries: list[dict], version: int, dim: int
) -> dict:
    """The manifest of a build of `entries` (shards), as the job assembles it for table
    version `version`."""
    return assemble_manifest(
        surface,
        build_id,
        entries,
        table_uri="t",
        table_version=version,
        catalog=None,
        model_version="m",
        dim=dim,
        group_clusters=None,
        seconds={},
    )
