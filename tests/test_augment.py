"""Item drop / word drop (Eq. 9 views): order kept, first item kept, never empty, right positions swapped."""

from __future__ import annotations

import numpy as np

from unisrec.data.augment import augment_batch, item_drop, swap_word_drop_features


def batch(rng, b=400, l=12, n_items=50):
    lengths = rng.integers(1, l + 1, b)
    hist = np.zeros((b, l), np.int64)
    for i, n in enumerate(lengths):  # distinct items per row so order is checkable
        hist[i, :n] = rng.choice(np.arange(1, n_items + 1), n, replace=False)
    return hist, lengths


def test_item_drop_keeps_order_first_item_and_is_never_empty():
    rng = np.random.default_rng(0)
    hist, lengths = batch(rng)
    out, new_len = item_drop(hist, lengths, 0.5, np.random.default_rng(1))
    assert (new_len >= 1).all() and (new_len <= lengths).all()
    assert (new_len < lengths).any()  # something was dropped
    for i in range(len(hist)):
        orig = list(hist[i, : lengths[i]])
        kept = list(out[i, : new_len[i]])
        assert kept[0] == orig[0]
        assert (out[i, new_len[i]:] == 0).all()  # left-aligned, padding after
        positions = [orig.index(x) for x in kept]
        assert positions == sorted(positions)  # a subsequence, order kept


def test_item_drop_rate_is_about_p_on_positions_after_the_first():
    rng = np.random.default_rng(2)
    hist, lengths = batch(rng, b=3000)
    _, new_len = item_drop(hist, lengths, 0.2, np.random.default_rng(3))
    dropped = (lengths - new_len).sum() / (lengths - 1).sum()
    assert 0.18 < dropped < 0.22


def test_item_drop_p1_leaves_only_the_first_item():
    rng = np.random.default_rng(4)
    hist, lengths = batch(rng)
    out, new_len = item_drop(hist, lengths, 1.0, rng)
    assert (new_len == 1).all() and (out[:, 0] == hist[:, 0]).all() and (out[:, 1:] == 0).all()


def test_word_drop_swaps_features_at_exactly_the_masked_real_positions():
    rng = np.random.default_rng(5)
    hist, lengths = batch(rng)
    out, swap = swap_word_drop_features(hist, lengths, 0.3, 1000, np.random.default_rng(6))
    real = np.arange(hist.shape[1])[None, :] < lengths[:, None]
    assert not (swap & ~real).any()  # padding never swapped
    assert np.array_equal(out[swap], hist[swap] + 1000)
    assert np.array_equal(out[~swap], hist[~swap])
    assert 0.27 < swap.sum() / real.sum() < 0.33


def test_augment_batch_mixes_views_with_the_given_probability():
    rng = np.random.default_rng(7)
    hist, lengths = batch(rng, b=4000)
    aug, aug_len = augment_batch(hist, lengths, np.random.default_rng(8), 1000, item_drop_prob=0.9, drop_prob=0.2)
    word = (aug >= 1000).any(axis=1)
    shortened = aug_len < lengths
    assert not (word & shortened).any()  # a row is one view or the other
    assert (aug_len >= 1).all()
    # item drop changes a row unless all of its items after the first survive (0.8 ** (len - 1))
    expected_item = (0.9 * (1 - 0.8 ** (lengths - 1))).mean()
    expected_word = (0.1 * (1 - 0.8**lengths)).mean()
    assert abs(shortened.mean() - expected_item) < 0.03
    assert abs(word.mean() - expected_word) < 0.02
    # same seed -> same views (the batch split across processes relies on it)
    again, _ = augment_batch(hist, lengths, np.random.default_rng(8), 1000, 0.9, 0.2)
    assert np.array_equal(aug, again)
