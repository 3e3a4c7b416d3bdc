"""Full-ranking metrics against hand-computed rankings."""

import math

import numpy as np
import pytest
import torch

from unisrec.evaluation.metrics import metrics_from_ranks, rank_examples, rank_of_targets, ranks_and_exposure

INF = float("-inf")


def test_ranks_hand_computed():
    # column 0 = padding (-inf); items 1..4
    scores = torch.tensor(
        [
            [INF, 0.1, 0.9, 0.5, 0.3],  # target 3 (0.5): only item 2 is higher -> rank 1
            [INF, 0.1, 0.9, 0.5, 0.3],  # target 2: best -> rank 0
            [INF, 0.1, 0.9, 0.5, 0.3],  # target 1: worst -> rank 3
        ]
    )
    ranks = rank_of_targets(scores, torch.tensor([3, 2, 1]))
    assert ranks.tolist() == [1, 0, 3]


def test_ties_count_against_the_target():
    scores = torch.tensor([[INF, 0.5, 0.5, 0.5, 0.2]])
    # target 2 ties with items 1 and 3: pessimistic rank 2 (both count as ahead)
    assert rank_of_targets(scores, torch.tensor([2])).tolist() == [2]
    # a constant scorer ranks every target last, not first
    const = torch.tensor([[INF, 1.0, 1.0, 1.0, 1.0]])
    assert rank_of_targets(const, torch.tensor([4])).tolist() == [3]


def test_padding_is_never_ahead_and_nan_target_ranked_last():
    scores = torch.tensor([[INF, -1e30, -2e30], [INF, float("nan"), 0.0]])
    ranks = rank_of_targets(scores, torch.tensor([1, 1]))
    assert ranks.tolist() == [0, 1]


def test_metrics_values_and_k_larger_than_catalogue():
    ranks = np.array([0, 1, 9, 10, 60])
    m = metrics_from_ranks(ranks, ks=(10, 50, 1000))
    assert m["recall@10"] == pytest.approx(3 / 5)
    expected_ndcg10 = (1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(11)) / 5
    assert m["ndcg@10"] == pytest.approx(expected_ndcg10)
    assert m["recall@50"] == pytest.approx(4 / 5)
    assert m["ndcg@50"] == pytest.approx(expected_ndcg10 + 1 / math.log2(12) / 5)
    # K beyond the catalogue: every target is a hit
    assert m["recall@1000"] == 1.0


def test_single_user():
    m = metrics_from_ranks(torch.tensor([2]), ks=(1, 3))
    assert m == {"recall@1": 0.0, "ndcg@1": 0.0, "recall@3": 1.0, "ndcg@3": pytest.approx(0.5)}


class FixedScorer(torch.nn.Module):
    """Scores item i as i * (last history item) -- a known ranking to check batching/ordering."""

    def __init__(self, n):
        super().__init__()
        self.n = n

    def item_representations(self):
        return torch.arange(self.n + 1, dtype=torch.float32)

    def sequence_representation(self, seq, lens, table):
        assert seq.shape[1] == int(lens.max())  # padded only to the batch's longest history
        return seq.gather(1, (lens - 1).view(-1, 1)).float()

    def scores(self, s, table):
        out = s * table[None, :]
        out[:, 0] = INF
        return out


def test_rank_examples_keeps_input_order_across_length_batches():
    n = 6
    hist = np.array([[1, 0, 0], [2, 3, 1], [5, 5, 0], [1, 0, 0]])
    lens = np.array([1, 3, 2, 1])
    # positive last item -> higher index ranks first: rank of target t = n - t
    targets = np.array([6, 2, 4, 1])
    ranks = rank_examples(FixedScorer(n), hist, lens, targets, batch_size=2)
    assert ranks.tolist() == [0, 4, 2, 5]


def test_exposure_counts_each_users_top_k_in_the_same_pass_as_the_ranks():
    n = 6
    hist = np.array([[1, 0, 0], [2, 3, 1], [5, 5, 0], [1, 0, 0]])
    lens = np.array([1, 3, 2, 1])
    targets = np.array([6, 2, 4, 1])
    ranks, exposure = ranks_and_exposure(FixedScorer(n), hist, lens, targets, k=2, batch_size=2)
    assert ranks.tolist() == rank_examples(FixedScorer(n), hist, lens, targets, batch_size=3).tolist() == [0, 4, 2, 5]
    # a positive last item puts items 6 and 5 on top for all four users; padding (0) is never listed
    assert exposure.tolist() == [0, 0, 0, 0, 0, 4, 4]
    assert ranks_and_exposure(FixedScorer(n), hist, lens, targets, k=None)[1] is None
    # k above the catalogue lists every real item once per user
    assert ranks_and_exposure(FixedScorer(n), hist, lens, targets, k=50)[1].tolist() == [0, 4, 4, 4, 4, 4, 4]
