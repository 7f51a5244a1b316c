"""The paper's mixed-negative softmax loss: an in-batch term plus a random-negative term, summed.

In-batch term: each query's positive against the other positives of the batch, every logit
corrected by minus the log of that product's sampling probability (logQ), since popular products
are over-represented as in-batch negatives. Random term: the positive against products drawn
uniformly from the catalog (uniform sampling needs no correction). In both, a negative that is the
query's own product (an accidental positive) is masked out. Logits are cosine / temperature.
"""

from __future__ import annotations

import dataclasses

import torch
from torch.nn import functional as F


@dataclasses.dataclass
class LossParts:
    total: torch.Tensor
    in_batch: torch.Tensor
    random: torch.Tensor


def mixed_negative_loss(
    queries: torch.Tensor,
    positives: torch.Tensor,
    positive_ids: torch.Tensor,
    log_q: torch.Tensor,
    negatives: torch.Tensor,
    negative_ids: torch.Tensor,
    temperature: torch.Tensor,
) -> LossParts:
    """queries, positives (B, d) unit vectors; positive_ids, log_q (B,); negatives (R, d)."""
    masked = torch.finfo(queries.dtype).min
    logits = queries @ positives.T / temperature - log_q[None, :]
    same = positive_ids[:, None] == positive_ids[None, :]
    diagonal = torch.eye(len(positive_ids), dtype=torch.bool, device=queries.device)
    logits = logits.masked_fill(same & ~diagonal, masked)
    targets = torch.arange(len(positive_ids), device=queries.device)
    in_batch = F.cross_entropy(logits, targets)

    positive_logit = (queries * positives).sum(-1, keepdim=True) / temperature
    negative_logits = (queries @ negatives.T / temperature).masked_fill(
        positive_ids[:, None] == negative_ids[None, :], masked
    )
    random_logits = torch.cat([positive_logit, negative_logits], dim=1)
    random = F.cross_entropy(random_logits, torch.zeros_like(targets))
    return LossParts(total=in_batch + random, in_batch=in_batch, random=random)


def symmetric_pair_loss(
    first: torch.Tensor,
    second: torch.Tensor,
    first_ids: torch.Tensor,
    second_ids: torch.Tensor,
    others: torch.Tensor,
    other_ids: torch.Tensor,
    temperature: torch.Tensor,
) -> LossParts:
    """The catalog objective's loss: each of two views pulled towards the other against the
    batch and `others`, both ways round, averaged; uniform sampling, so no logQ correction."""
    uniform = torch.zeros(len(first), device=first.device)
    one = mixed_negative_loss(first, second, second_ids, uniform, others, other_ids, temperature)
    two = mixed_negative_loss(second, first, first_ids, uniform, others, other_ids, temperature)
    return LossParts(
        total=(one.total + two.total) / 2,
        in_batch=(one.in_batch + two.in_batch) / 2,
        random=(one.random + two.random) / 2,
    )
