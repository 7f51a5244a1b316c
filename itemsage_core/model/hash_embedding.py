"""Hash embeddings (Svenstrup et al. 2017): a shared table indexed by k hash functions per token.

Token id i has the vector  e(i) = sum_j W[i, j] * E[h_j(i)]  with E a shared (buckets x dim)
table, W a learned (vocab x k) importance table and h_j(i) = ((a_j * i + b_j) mod p) mod buckets
universal hashes (p = 2^31 - 1). A bag of tokens sums its vectors (one EmbeddingBag call).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from itemsage_core.model.config import PRIME


class HashEmbedding(nn.Module):
    """Bag-of-tokens vectors from a shared hashed table and per-token importance weights."""

    def __init__(self, vocab_size: int, buckets: int, dim: int, params: list[list[int]]):
        super().__init__()
        if vocab_size >= PRIME:
            raise ValueError(f"vocabulary of {vocab_size} ids needs a larger prime than {PRIME}")
        self.buckets = buckets
        self.table = nn.Parameter(torch.randn(buckets, dim) * dim**-0.5)
        self.importance = nn.Parameter(torch.full((max(vocab_size, 1), len(params)), 0.5))
        self.register_buffer("hash_a", torch.tensor([a for a, _ in params]), persistent=False)
        self.register_buffer("hash_b", torch.tensor([b for _, b in params]), persistent=False)

    def buckets_of(self, ids: torch.Tensor) -> torch.Tensor:
        """(T, k) bucket of each token under each hash function."""
        return ((ids[:, None] * self.hash_a + self.hash_b) % PRIME) % self.buckets

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """(bags, dim) sums over the bags that start at `offsets` (empty bags give zeros)."""
        k = self.hash_a.shape[0]
        buckets = self.buckets_of(ids).reshape(-1)
        weights = self.importance[ids].reshape(-1)
        return F.embedding_bag(
            buckets, self.table, offsets * k, mode="sum", per_sample_weights=weights
        )
