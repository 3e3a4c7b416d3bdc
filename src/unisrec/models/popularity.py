"""Popularity baseline: recommend the items bought most often in the training part, to everyone.

The floor every sequential model must clear. Counts come from the training part of each user's
sequence only (every item before the validation target), so nothing of the validation/test
targets leaks into the ranking. Evaluated with the same full-ranking protocol and tie rule as the
models (``unisrec.evaluation.metrics``): the score of an item is its count; ties between equally
popular items are counted against the target (pessimistic), exactly as for any other scorer.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from unisrec.data.dataset import Dataset


def training_part_mask(dataset: Dataset) -> np.ndarray:
    """Bool mask over ``seq_items``: True for positions before each user's validation target.

    Under leave-one-out the last two items are the validation and test targets; a user with fewer
    than 3 items still contributes the items that are not a target of their own (the first item).
    """
    lengths = dataset.seq_lengths
    pos_in_user = np.arange(dataset.num_interactions) - np.repeat(dataset.seq_offsets[:-1], lengths)
    n_train = np.repeat(np.maximum(lengths - 2, 1), lengths)  # the first item is never a target
    return pos_in_user < n_train


def popularity_counts(dataset: Dataset) -> np.ndarray:
    """float64 (num_items + 1,): how often each item occurs in the training part; index 0 = padding."""
    items = dataset.seq_items[training_part_mask(dataset)]
    return np.bincount(items, minlength=dataset.num_items + 1).astype(np.float64)


def popularity_scores(dataset: Dataset, n_rows: int) -> "torch.Tensor":  # noqa: F821
    """(n_rows, num_items + 1) score matrix (every row identical), padding column at -inf."""
    import torch

    counts = torch.from_numpy(popularity_counts(dataset))
    counts[0] = float("-inf")
    return counts.unsqueeze(0).expand(n_rows, -1)


def popularity_ranks(dataset: Dataset, split: str = "test") -> np.ndarray:
    """0-based full-ranking rank of each ``split`` user's target under the popularity ranking."""
    import torch

    from unisrec.evaluation.metrics import rank_of_targets

    _, _, targets = dataset.examples(split, max_history=1)
    if len(targets) == 0:
        from unisrec.errors import UserError

        raise UserError(f"dataset {dataset.path or dataset.name} has no {split} examples (every user is too short)")
    scores = popularity_scores(dataset, 1)
    # every row is the same ranking, so score in chunks of a broadcast view (no n x items copy)
    chunks = np.array_split(targets, max(1, len(targets) // 4096))
    return torch.cat([rank_of_targets(scores.expand(len(c), -1), torch.from_numpy(c)) for c in chunks]).numpy()


def popularity_exposure(dataset: Dataset, split: str = "test", k: int = 10) -> np.ndarray:
    """int64 (num_items + 1,): how many ``split`` users have each item in their top-``k`` list -- the
    ``k`` most popular items for every user (equal counts in the order of ``torch.topk`` over the
    score row, like a model's lists: ``evaluation.metrics.ranks_and_exposure``)."""
    import torch

    n_users = len(dataset.examples(split, max_history=1)[2])
    top = torch.topk(popularity_scores(dataset, 1)[0], min(k, dataset.num_items)).indices.numpy()
    exposure = np.zeros(dataset.num_items + 1, dtype=np.int64)
    exposure[top] = n_users
    return exposure


def evaluate_popularity(dataset: Dataset, split: str = "test", ks: Sequence[int] = (10, 50)) -> dict[str, float]:
    """Recall@K / NDCG@K of the popularity ranking on ``split`` (full ranking over all items)."""
    from unisrec.evaluation.metrics import metrics_from_ranks

    return metrics_from_ranks(popularity_ranks(dataset, split), ks)
