"""Sequence augmentations for the sequence-sequence contrastive task (Eq. 9), vectorised over a batch.

Histories are left-aligned (real items first, padding 0 after), as ``Dataset.examples`` builds them.

* item drop: each item is dropped with probability p (0.2), the first item is always kept, the
  order of the kept items is preserved, so a view is never empty;
* word drop (``swap_word_drop_features``): each real position's text feature is replaced, with
  probability p (0.2), by its "feat2" copy -- the feature of the same text with 15% of its words
  dropped (``unisrec encode --word-drop``). The feature table used in pre-training holds the clean rows at indices
  1..n and the word-drop rows at n+1..2n, so word drop is just ``index + n`` at chosen positions.

Each sequence gets item drop with probability 0.9 and word drop otherwise (docs/protocol.md "Pre-training").
Random numbers come from a numpy ``Generator`` the caller seeds per global batch, so a view does
not depend on how the batch is split across processes.
"""

from __future__ import annotations

import numpy as np


def item_drop(hist: np.ndarray, lengths: np.ndarray, drop_prob: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Drop each real item with probability ``drop_prob``; keep the first; keep order; re-left-align.

    Returns (new histories (B, L), new lengths (B,)); lengths are >= 1 wherever the input's were.
    """
    b, l = hist.shape
    cols = np.arange(l)
    real = cols[None, :] < lengths[:, None]
    keep = (rng.random((b, l)) >= drop_prob) & real
    keep[:, 0] = real[:, 0]  # the first item is always kept, so no view is empty
    new_len = keep.sum(axis=1)
    # a stable sort of "not kept" moves kept items to the front in their original order
    order = np.argsort(~keep, axis=1, kind="stable")
    out = np.take_along_axis(hist, order, axis=1)
    out[cols[None, :] >= new_len[:, None]] = 0
    return out, new_len.astype(lengths.dtype)


def swap_word_drop_features(
    hist: np.ndarray, lengths: np.ndarray, drop_prob: float, augmented_offset: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Replace each real position's item index i by ``i + augmented_offset`` (its feat2 row) with
    probability ``drop_prob``. Returns (new histories, the (B, L) bool mask of swapped positions)."""
    b, l = hist.shape
    real = np.arange(l)[None, :] < lengths[:, None]
    swap = (rng.random((b, l)) < drop_prob) & real
    return np.where(swap, hist + augmented_offset, hist), swap


def augment_batch(
    hist: np.ndarray,
    lengths: np.ndarray,
    rng: np.random.Generator,
    augmented_offset: int,
    item_drop_prob: float = 0.9,
    drop_prob: float = 0.2,
) -> tuple[np.ndarray, np.ndarray]:
    """The positive view of each sequence for Eq. (9): item drop with probability
    ``item_drop_prob``, word drop otherwise. Returns (augmented histories, lengths)."""
    use_item_drop = rng.random(hist.shape[0]) < item_drop_prob
    dropped, dropped_len = item_drop(hist, lengths, drop_prob, rng)
    swapped, _ = swap_word_drop_features(hist, lengths, drop_prob, augmented_offset, rng)
    aug = np.where(use_item_drop[:, None], dropped, swapped)
    aug_len = np.where(use_item_drop, dropped_len, lengths)
    return aug, aug_len
