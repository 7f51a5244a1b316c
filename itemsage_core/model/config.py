"""The encoder's shape (ModelConfig) and its hash functions' parameters: plain data, no PyTorch,
so the CLI can show the defaults without loading it."""

from __future__ import annotations

import dataclasses

import numpy as np

PRIME = 2**31 - 1  # the modulus of the universal hash functions of hash_embedding


def hash_parameters(seed: int, hashes: int) -> list[list[int]]:
    """(a, b) per hash function, a in [1, p), b in [0, p): fixed by the seed, saved in config."""
    rng = np.random.default_rng(seed)
    return [[int(rng.integers(1, PRIME)), int(rng.integers(0, PRIME))] for _ in range(hashes)]


MODALITIES = ("image", "text")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Encoder shape. Defaults follow the paper where it is specific (docs/model.md)."""

    vocab_size: int
    image_dim: int = 256
    output_dim: int = 256
    d_model: int = 512
    heads: int = 8
    ffn_dim: int = 2048
    layers: int = 1
    dropout: float = 0.1
    mlp_hidden: int = 512
    hash_buckets: int = 100_000
    hash_dim: int = 256
    hash_params: tuple = ()
    modalities: tuple[str, ...] = MODALITIES
    initial_temperature: float = 0.05
    dense: tuple[tuple[str, int], ...] = ()  # dense features read, (name, dim) in token order

    @classmethod
    def create(cls, vocab_size: int, hash_seed: int = 0, hashes: int = 2, **kw) -> ModelConfig:
        params = tuple(tuple(p) for p in hash_parameters(hash_seed, hashes))
        return cls(vocab_size=vocab_size, hash_params=params, **kw)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        data = dict(data)
        data["hash_params"] = tuple(tuple(p) for p in data["hash_params"])
        data["modalities"] = tuple(data["modalities"])
        data["dense"] = tuple((name, int(dim)) for name, dim in data.get("dense", ()))
        return cls(**data)

    @property
    def dense_dims(self) -> dict[str, int]:
        return dict(self.dense)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
