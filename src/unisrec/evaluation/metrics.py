"""Full-ranking evaluation: Recall@K and NDCG@K over every item of the domain (docs/protocol.md "Evaluation").

Protocol (the paper's, via RecBole's full-sort evaluation):

* every real item of the domain is a candidate -- no sampled negatives;
* items already in the user's history are NOT removed from the ranking;
* only the padding column (index 0) is excluded: callers' score matrices carry ``-inf`` there;
* Recall@K (= HIT@K under leave-one-out, one target per user) and NDCG@K = 1 / log2(rank + 2)
  if the 0-based rank is below K, averaged over users.

Tie rule (pessimistic): the rank of a target is the number of *other* real items whose score is
greater than **or equal to** the target's score. A model that scores every item the same therefore
ranks every target last, instead of first as an optimistic rule would; with continuous scores ties
are rare and the rule rarely matters. RecBole breaks ties by ``torch.topk`` order (unspecified).
A NaN target score is also ranked last (every other item counts as ahead of it).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Sequence

import numpy as np

DEFAULT_KS = (10, 50)


def rank_of_targets(scores: "torch.Tensor", targets: "torch.Tensor") -> "torch.Tensor":  # noqa: F821
    """0-based rank of each row's target among all real items, ties counted against the target.

    ``scores`` (B, n + 1) with column 0 (padding) at ``-inf``; ``targets`` (B,) item indices >= 1.
    Returns int64 (B,).
    """
    import torch

    if scores.ndim != 2 or targets.ndim != 1 or scores.shape[0] != targets.shape[0]:
        raise ValueError(f"scores {tuple(scores.shape)} and targets {tuple(targets.shape)} do not match")
    target_scores = scores.gather(1, targets.view(-1, 1).long())  # (B, 1)
    ahead = (scores >= target_scores).sum(dim=1) - 1  # minus the target itself
    # padding is -inf, so it is "ahead" only of a -inf target; never let it count
    ahead = ahead - (scores[:, :1] >= target_scores).squeeze(1).long()
    nan = torch.isnan(target_scores.squeeze(1))
    ahead = torch.where(nan, torch.full_like(ahead, scores.shape[1] - 2), ahead)
    return ahead.long()


def metrics_from_ranks(ranks: Any, ks: Iterable[int] = DEFAULT_KS) -> dict[str, float]:
    """{"recall@K", "ndcg@K"} for each K: means over users of hit and 1/log2(rank+2) within top K.

    K larger than the catalogue is allowed (every target is then a hit).
    """
    r = np.asarray(ranks.cpu() if hasattr(ranks, "cpu") else ranks, dtype=np.float64).reshape(-1)
    out: dict[str, float] = {}
    if r.size == 0:
        raise ValueError("no ranks to average (empty split?)")
    gain = 1.0 / np.log2(r + 2.0)
    for k in ks:
        hit = r < k
        out[f"recall@{k}"] = float(hit.mean())
        out[f"ndcg@{k}"] = float(np.where(hit, gain, 0.0).mean())
    return out


EXPOSURE_K = 10  # the length of the recommendation lists whose items are counted (the paper's K)


def score_examples(
    model: Any,
    history: np.ndarray,
    lengths: np.ndarray,
    batch_size: int,
    device: Any,
    consume: Callable[[np.ndarray, "torch.Tensor"], None],  # noqa: F821
) -> None:
    """Score every padded history against every item: ``consume(indices, scores)`` once per length
    bucket, ``scores`` (len(indices), n + 1) with the padding column at ``-inf``.

    ``model`` is any scorer with ``item_representations()``, ``sequence_representation(seq, lens,
    table)`` and ``scores(seq_repr, table)`` (UniSRec, SASRec, ...). The item table is computed once;
    the model scores in eval mode without gradients and is left in the mode it came in.
    """
    import torch

    from unisrec.models.encoder import length_buckets

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            table = model.item_representations()
            for idx in length_buckets(lengths, batch_size):
                width = max(int(lengths[idx].max()), 1)
                seq = torch.from_numpy(history[idx, :width]).to(device)
                lens = torch.from_numpy(lengths[idx]).to(device)
                consume(idx, model.scores(model.sequence_representation(seq, lens, table), table))
    finally:
        model.train(was_training)


def rank_examples(
    model: Any,
    history: np.ndarray,
    lengths: np.ndarray,
    targets: np.ndarray,
    batch_size: int = 4096,
    device: Any = "cpu",
) -> np.ndarray:
    """Ranks (0-based, input order) of ``targets`` under ``model`` for padded histories (:func:`score_examples`)."""
    return ranks_and_exposure(model, history, lengths, targets, None, batch_size, device)[0]


def ranks_and_exposure(
    model: Any,
    history: np.ndarray,
    lengths: np.ndarray,
    targets: np.ndarray,
    k: int | None = EXPOSURE_K,
    batch_size: int = 4096,
    device: Any = "cpu",
) -> tuple[np.ndarray, np.ndarray | None]:
    """(ranks as :func:`rank_examples`, exposure) from one scoring pass.

    exposure: int64 (n + 1,), how many users have each item in their top-``k`` list (index 0, padding,
    is never recommended: 0) -- what the model recommends, the other half of a long-tail analysis
    (``evaluation.longtail.exposure_report``). ``k=None`` skips it. Equal scores at the cut are broken
    by ``torch.topk``'s order.
    """
    import torch

    ranks = np.empty(len(targets), dtype=np.int64)
    exposure: list[np.ndarray] = []

    def consume(idx: np.ndarray, scores: "torch.Tensor") -> None:
        ranks[idx] = rank_of_targets(scores, torch.from_numpy(targets[idx]).to(scores.device)).cpu().numpy()
        if k is not None:
            top = torch.topk(scores, min(k, scores.shape[1] - 1), dim=1).indices
            exposure.append(np.bincount(top.cpu().numpy().ravel(), minlength=scores.shape[1]))

    score_examples(model, history, lengths, batch_size, device, consume)
    if k is None:
        return ranks, None
    if not exposure:
        raise ValueError("no examples to score")
    return ranks, np.sum(exposure, axis=0).astype(np.int64)


def model_ranks(
    model: Any,
    dataset: Any,
    split: str = "test",
    batch_size: int = 4096,
    device: Any = "cpu",
    max_history: int | None = None,
) -> np.ndarray:
    """0-based full-ranking rank of each ``split`` user's target under ``model`` (dataset user order).

    The model must already sit on ``device`` (and, for UniSRec, hold the domain's features).
    ``max_history`` defaults to the model's ``max_seq_length``.
    """
    if max_history is None:
        max_history = int(model.max_seq_length)
    hist, lens, tgt = dataset.examples(split, max_history)
    if len(tgt) == 0:
        from unisrec.errors import UserError

        raise UserError(f"dataset {dataset.path or dataset.name} has no {split} examples (every user is too short)")
    return rank_examples(model, hist, lens, tgt, batch_size, device)


def evaluate_model(
    model: Any,
    dataset: Any,
    split: str = "test",
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 4096,
    device: Any = "cpu",
    max_history: int | None = None,
) -> dict[str, float]:
    """Full-ranking metrics of ``model`` on a :class:`~unisrec.data.dataset.Dataset` split (:func:`model_ranks`)."""
    return metrics_from_ranks(model_ranks(model, dataset, split, batch_size, device, max_history), ks)


def ndcg_at(rank: int, k: int) -> float:
    """NDCG@k of one target at 0-based ``rank`` (single relevant item: IDCG = 1)."""
    return 1.0 / math.log2(rank + 2) if rank < k else 0.0
