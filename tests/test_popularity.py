"""Popularity baseline: counts from the training part only, full-ranking metrics by hand."""

import math

import numpy as np
import pytest

from unisrec.data.dataset import Dataset
from unisrec.models.popularity import evaluate_popularity, popularity_counts, training_part_mask


def make(seqs, n_items):
    lens = [len(s) for s in seqs]
    return Dataset(
        name="toy",
        item_ids=[f"i{k}" for k in range(1, n_items + 1)],
        item_texts=[f"text {k}." for k in range(1, n_items + 1)],
        user_ids=[f"u{k}" for k in range(len(seqs))],
        seq_offsets=np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
        seq_items=np.concatenate([np.asarray(s, dtype=np.int32) for s in seqs]),
    )


def test_counts_exclude_valid_and_test_targets():
    ds = make([[1, 1, 2, 5, 6], [1, 3, 4], [2, 5]], n_items=6)
    # training parts: [1, 1, 2], [1], [2]  (last two items of each user are valid/test targets;
    # a 2-item user keeps its first item, which is never a target)
    assert training_part_mask(ds).tolist() == [True, True, True, False, False, True, False, False, True, False]
    assert popularity_counts(ds).tolist() == [0, 3, 2, 0, 0, 0, 0]


def test_metrics_match_hand_computed_ranks():
    # training parts: [1, 1, 2], [1, 2], [1] -> item 1: 4, item 2: 2, others 0
    ds = make([[1, 1, 2, 3, 1], [1, 2, 4, 2], [1, 3, 6]], n_items=6)
    counts = popularity_counts(ds)
    assert counts.tolist() == [0, 4, 2, 0, 0, 0, 0]
    # test targets: 1 (rank 0), 2 (rank 1), 6 (count 0, tied with items 3,4,5 -> pessimistic rank 5)
    ranks = [0, 1, 5]
    m = evaluate_popularity(ds, "test", ks=(1, 2, 10))
    assert m["recall@1"] == pytest.approx(1 / 3)
    assert m["recall@2"] == pytest.approx(2 / 3)
    assert m["recall@10"] == pytest.approx(1.0)
    assert m["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3)) / 3)
    assert m["ndcg@10"] == pytest.approx(sum(1 / math.log2(r + 2) for r in ranks) / 3)


def test_popularity_exposure_lists_the_k_most_popular_items_for_every_test_user():
    from unisrec.models.popularity import popularity_exposure

    # training parts: [1, 1, 2], [1, 2], [1] -> item 1: 4, item 2: 2, others 0; three test users
    ds = make([[1, 1, 2, 3, 1], [1, 2, 4, 2], [1, 3, 6]], n_items=6)
    assert popularity_exposure(ds, "test", k=2).tolist() == [0, 3, 3, 0, 0, 0, 0]
    exposure = popularity_exposure(ds, "test", k=10)  # k above the catalogue: every item, padding never
    assert exposure.tolist() == [0, 3, 3, 3, 3, 3, 3]
