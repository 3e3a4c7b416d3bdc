"""Pre-training losses, Eq. (8)-(10): two in-batch contrastive tasks, computed in log space.

Both tasks score a batch of L2-normalised sequence representations (the queries) against a set
of in-batch candidates -- the adapted target items (Eq. 8) or the augmented views of the same
sequences (Eq. 9) -- with cosine similarity / temperature. Each query has exactly one positive
candidate (``positive_index``); every other candidate is a negative, except candidates that
belong to another sequence with the *same* target item: those are false negatives and are removed
from the softmax denominator (logit -inf).

Differences from the authors' release (``UniSRec.seq_item_contrastive_task``): the release sets the
masked logits to 0 -- so each false negative still adds exp(0) = 1 to the denominator instead of
being removed -- and computes ``-log(exp(pos) / sum(exp(...)))``, which overflows to inf/nan once
a logit exceeds ~88 in float32 (cosine / 0.07 is at most 14.3, but a larger temperature-free use or
half precision breaks it). Here the loss is ``cross_entropy`` over masked logits, i.e. log-sum-exp.

Candidates may come from every rank of a distributed run (see ``training.distributed``):
``positive_index`` then points into the gathered candidate list.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def false_negative_mask(
    query_targets: torch.Tensor, candidate_targets: torch.Tensor, positive_index: torch.Tensor
) -> torch.Tensor:
    """(B, N) bool, True where candidate j is another sequence's row with query i's own target.

    The positive itself (column ``positive_index[i]``) is never masked.
    """
    same = query_targets[:, None] == candidate_targets[None, :]
    same[torch.arange(query_targets.shape[0], device=same.device), positive_index] = False
    return same


def masked_contrastive_loss(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    positive_index: torch.Tensor,
    exclude: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Mean InfoNCE: -log softmax(q_i . c / tau)[positive_index[i]] with ``exclude`` columns removed.

    ``queries`` (B, d) and ``candidates`` (N, d) must already be L2-normalised; ``exclude`` (B, N)
    bool removes candidates from the denominator (logit -inf). Computed with ``cross_entropy``
    (log-sum-exp), so it stays finite for any finite logits.
    """
    logits = queries @ candidates.T / temperature
    logits = logits.masked_fill(exclude, float("-inf"))
    return F.cross_entropy(logits, positive_index)


def sequence_item_contrastive_loss(
    seq_repr: torch.Tensor,
    target_repr: torch.Tensor,
    query_targets: torch.Tensor,
    candidate_targets: torch.Tensor,
    positive_index: torch.Tensor,
    temperature: float = 0.07,
) -> torch.Tensor:
    """Eq. (8), sequence-item contrastive task: each sequence s_j against the in-batch next items.

    ``seq_repr`` (B, d): the batch's sequence representations (any norm; normalised here).
    ``target_repr`` (N, d): adapted representations v of the candidates' true next items
    (N = B in one process, the global batch when gathered across ranks).
    ``query_targets`` (B,) / ``candidate_targets`` (N,): item indices (offset per domain) used to
    drop false negatives -- candidates whose item equals the query's own target.
    """
    exclude = false_negative_mask(query_targets, candidate_targets, positive_index)
    return masked_contrastive_loss(
        F.normalize(seq_repr, dim=-1), F.normalize(target_repr, dim=-1), positive_index, exclude, temperature
    )


def sequence_sequence_contrastive_loss(
    seq_repr: torch.Tensor,
    augmented_repr: torch.Tensor,
    query_targets: torch.Tensor,
    candidate_targets: torch.Tensor,
    positive_index: torch.Tensor,
    temperature: float = 0.07,
) -> torch.Tensor:
    """Eq. (9), sequence-sequence contrastive task: s_j against the augmented views s~ of the batch.

    The positive of sequence j is its own augmented view (item drop or word drop, see
    ``data.augment``); other views are negatives, except views of sequences with the same next
    item (masked as in Eq. 8, as the release does).
    """
    exclude = false_negative_mask(query_targets, candidate_targets, positive_index)
    return masked_contrastive_loss(
        F.normalize(seq_repr, dim=-1), F.normalize(augmented_repr, dim=-1), positive_index, exclude, temperature
    )


def pretraining_loss(
    loss_si: torch.Tensor | None, loss_ss: torch.Tensor | None, lambda_ss: float = 1e-3, lambda_si: float = 1.0
) -> torch.Tensor:
    """Eq. (10): L_PT = L_S-I + lambda * L_S-S (lambda = 1e-3 in the paper), generalised to
    L = lambda_si * L_S-I + lambda_ss * L_S-S for the ablations "w/o S-I" / "w/o S-S"
    (docs/analyses.md): a task whose weight is 0 is not computed at all and is passed as None
    (a weight-0 term is left out of the sum, not multiplied by 0)."""
    used = [(w, loss) for w, loss in ((lambda_si, loss_si), (lambda_ss, loss_ss)) if w != 0]
    if not used or any(loss is None for _, loss in used):
        raise ValueError("pretraining_loss: one weight must be non-zero, and each task with a non-zero weight needs its loss")
    total = used[0][0] * used[0][1]
    for w, loss in used[1:]:
        total = total + w * loss
    return total
