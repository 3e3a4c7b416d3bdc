"""Eq. (8)-(10) losses: masking of duplicate targets, log-space == naive formula, finite on large logits."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from unisrec.training.losses import (
    false_negative_mask,
    masked_contrastive_loss,
    pretraining_loss,
    sequence_item_contrastive_loss,
    sequence_sequence_contrastive_loss,
)


def naive_loss(q, c, targets, temperature):
    """The formula written out with exp/log, false negatives removed from the denominator."""
    q, c = F.normalize(q, dim=-1), F.normalize(c, dim=-1)
    total = 0.0
    for i in range(q.shape[0]):
        pos = math.exp(float(q[i] @ c[i]) / temperature)
        den = sum(
            math.exp(float(q[i] @ c[j]) / temperature)
            for j in range(c.shape[0])
            if j == i or targets[j] != targets[i]
        )
        total += -math.log(pos / den)
    return total / q.shape[0]


def test_mask_removes_only_other_rows_with_same_target():
    targets = torch.tensor([5, 7, 5, 9, 5])
    mask = false_negative_mask(targets, targets, torch.arange(5))
    expected = torch.zeros(5, 5, dtype=torch.bool)
    for i, j in [(0, 2), (0, 4), (2, 0), (2, 4), (4, 0), (4, 2)]:
        expected[i, j] = True
    assert torch.equal(mask, expected)


def test_loss_equals_naive_formula_with_duplicate_targets():
    torch.manual_seed(0)
    q, c = torch.randn(6, 8, dtype=torch.float64), torch.randn(6, 8, dtype=torch.float64)
    targets = torch.tensor([3, 1, 3, 2, 1, 3])
    for fn in (sequence_item_contrastive_loss, sequence_sequence_contrastive_loss):
        got = fn(q, c, targets, targets, torch.arange(6), temperature=0.07)
        assert abs(float(got) - naive_loss(q, c, targets, 0.07)) < 1e-9


def test_masking_changes_the_loss_and_duplicates_do_not_act_as_negatives():
    torch.manual_seed(1)
    q = torch.randn(4, 8)
    c = q.clone()
    c[2] = q[0]  # row 2 has row 0's target and an identical candidate vector
    dup = torch.tensor([1, 2, 1, 3])
    unique = torch.tensor([1, 2, 4, 3])
    masked = sequence_item_contrastive_loss(q, c, dup, dup, torch.arange(4), 0.5)
    unmasked = sequence_item_contrastive_loss(q, c, unique, unique, torch.arange(4), 0.5)
    assert masked < unmasked
    # the release's variant (masked logit set to 0 => exp(0) = 1 stays in the denominator) differs
    qn, cn = F.normalize(q, dim=-1), F.normalize(c, dim=-1)
    logits = qn @ cn.T / 0.5
    release = logits.masked_fill(false_negative_mask(dup, dup, torch.arange(4)), 0.0)
    assert not torch.isclose(F.cross_entropy(release, torch.arange(4)), masked)


def test_finite_on_large_logits_where_exp_then_log_overflows():
    torch.manual_seed(2)
    q, c = torch.randn(5, 4), torch.randn(5, 4)
    c[0] = q[0]
    targets = torch.arange(5)
    qn, cn = F.normalize(q, dim=-1), F.normalize(c, dim=-1)
    tiny_t = 1e-3  # logits up to 1000: exp overflows float32
    naive = -torch.log(torch.exp((qn * cn).sum(-1) / tiny_t) / torch.exp(qn @ cn.T / tiny_t).sum(-1)).mean()
    assert not torch.isfinite(naive)
    loss = masked_contrastive_loss(qn, cn, targets, torch.zeros(5, 5, dtype=torch.bool), tiny_t)
    assert torch.isfinite(loss)
    loss.requires_grad_(True)
    qg = qn.clone().requires_grad_(True)
    masked_contrastive_loss(qg, cn, targets, torch.zeros(5, 5, dtype=torch.bool), tiny_t).backward()
    assert torch.isfinite(qg.grad).all()


def test_positive_index_points_into_gathered_candidates():
    """Rank 1 of 2: queries are rows 3..5 of a 6-row global candidate list."""
    torch.manual_seed(3)
    q, c = torch.randn(6, 8, dtype=torch.float64), torch.randn(6, 8, dtype=torch.float64)
    targets = torch.tensor([3, 1, 3, 2, 1, 3])
    full = sequence_item_contrastive_loss(q, c, targets, targets, torch.arange(6), 0.07)
    halves = [
        sequence_item_contrastive_loss(q[s], c, targets[s], targets, torch.arange(6)[s], 0.07)
        for s in (slice(0, 3), slice(3, 6))
    ]
    assert torch.isclose(full, (halves[0] + halves[1]) / 2)


def test_eq10_weighting():
    assert abs(float(pretraining_loss(torch.tensor(2.0), torch.tensor(5.0), 1e-3)) - 2.005) < 1e-6
