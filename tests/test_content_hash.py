"""The per-product content hash that decides what an incremental run re-encodes."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from itemsage_core.contracts.catalog_contract import conform_catalog
from itemsage_core.embedding import content_hash
from itemsage_core.embedding.content_hash import content_hashes

KNUTH = np.uint64(0x9E3779B97F4A7C15)


def vector_lists(rng, rows: int, dim: int) -> pa.Array:
    return pa.array(
        [
            None
            if rng.random() < 0.1
            else [
                rng.standard_normal(dim).astype(np.float32).tolist()
                for _ in range(rng.integers(0, 5))
            ]
            for _ in range(rows)
        ],
        pa.list_(pa.list_(pa.float32())),
    )


def general_path(column: pa.Array) -> np.ndarray:
    counts = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False)
    vectors = pc.list_flatten(column)
    dims = pc.fill_null(pc.list_value_length(vectors), 0).to_numpy(zero_copy_only=False)
    bits = (
        pc.list_flatten(vectors)
        .to_numpy(zero_copy_only=False)
        .astype(np.float32)
        .view(np.uint32)
        .astype(np.uint64)
    )
    return content_hash._ragged_hash(bits, dims, counts) ^ (counts.astype(np.uint64) * KNUTH)


def test_the_fast_uniform_dimension_path_equals_the_general_one():
    rng = np.random.default_rng(0)
    column = vector_lists(rng, 400, 16)
    assert (content_hash._image_hash(column) == general_path(column)).all()
    assert (
        content_hash._image_hash(column.slice(7, 100)) == general_path(column.slice(7, 100))
    ).all()


def test_the_hash_follows_encoder_inputs_only():
    base = {
        "product_id": ["a"],
        "title": ["red dress"],
        "colors": [["red", "blue"]],
        "image_embeddings": [[[0.5, 0.25], [1.0, 2.0]]],
        "price": [10.0],
    }

    def digest(**changes):
        return content_hashes(conform_catalog(pa.table({**base, **changes})))[0].as_py()

    same = digest()
    assert digest(price=[12.0]) == same  # not an encoder input
    assert digest(product_id=["b"]) == same
    for changed in (
        {"title": ["red dresses"]},
        {"colors": [["red blue"]]},
        {"colors": [["blue", "red"]]},
        {"image_embeddings": [[[1.0, 2.0], [0.5, 0.25]]]},
        {"image_embeddings": [[[0.5, 0.25]]]},
        {"image_embeddings": [[[0.5, 0.2500001], [1.0, 2.0]]]},
    ):
        assert digest(**changed) != same, changed
