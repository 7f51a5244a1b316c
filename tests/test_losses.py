import math

import torch
from torch.nn import functional as F

from itemsage_core.model.losses import mixed_negative_loss


def unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g), dim=-1)


def test_matches_a_direct_computation():
    q, p, r = unit(4, 8, seed=1), unit(4, 8, seed=2), unit(3, 8, seed=3)
    ids, neg_ids = torch.tensor([0, 1, 2, 3]), torch.tensor([10, 11, 12])
    log_q = torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    t = torch.tensor(0.1)
    parts = mixed_negative_loss(q, p, ids, log_q, r, neg_ids, t)
    in_batch = random = 0.0
    for i in range(4):
        logits = [float(q[i] @ p[j] / t - log_q[j]) for j in range(4)]
        in_batch += -(logits[i] - math.log(sum(math.exp(x) for x in logits)))
        logits = [float(q[i] @ p[i] / t)] + [float(q[i] @ r[k] / t) for k in range(3)]
        random += -(logits[0] - math.log(sum(math.exp(x) for x in logits)))
    assert math.isclose(parts.in_batch.item(), in_batch / 4, rel_tol=1e-5)
    assert math.isclose(parts.random.item(), random / 4, rel_tol=1e-5)
    assert math.isclose(parts.total.item(), (in_batch + random) / 4, rel_tol=1e-5)


def test_accidental_positives_are_masked():
    q, r = unit(3, 8, seed=4), unit(2, 8, seed=5)
    p = q.clone()
    zero_q = torch.zeros(3)
    t = torch.tensor(0.05)
    # Rows 0 and 1 engage the same product, and the first random negative is product 7 (row 2's).
    parts = mixed_negative_loss(q, p, torch.tensor([5, 5, 7]), zero_q, r, torch.tensor([7, 8]), t)
    alone = mixed_negative_loss(
        q[2:], p[2:], torch.tensor([7]), zero_q[2:], r[1:], torch.tensor([8]), t
    )
    pair = mixed_negative_loss(
        q[:2], p[:2], torch.tensor([5, 5]), zero_q[:2], r, torch.tensor([7, 8]), t
    )
    # With masking, rows 0 and 1 do not compete with each other, nor with row 2's product.
    assert parts.in_batch.item() < 1e-3
    assert math.isclose(
        3 * parts.random.item(), alone.random.item() + 2 * pair.random.item(), rel_tol=1e-5
    )


def test_logq_correction_lowers_the_pull_of_popular_negatives():
    q, p = unit(4, 8, seed=6), unit(4, 8, seed=7)
    ids, r, neg = torch.arange(4), unit(2, 8, seed=8), torch.tensor([9, 10])
    t = torch.tensor(0.1)
    uniform = mixed_negative_loss(q, p, ids, torch.log(torch.full((4,), 0.25)), r, neg, t)
    popular_3 = mixed_negative_loss(
        q, p, ids, torch.log(torch.tensor([0.1, 0.1, 0.1, 0.7])), r, neg, t
    )
    assert uniform.random.item() == popular_3.random.item()
    assert popular_3.in_batch.item() != uniform.in_batch.item()


def test_gradient_reaches_the_temperature():
    t = torch.tensor(0.1, requires_grad=True)
    q, p = unit(4, 8, seed=9), unit(4, 8, seed=10)
    mixed_negative_loss(
        q, p, torch.arange(4), torch.zeros(4), unit(2, 8), torch.tensor([8, 9]), t
    ).total.backward()
    assert t.grad is not None and t.grad.item() != 0
