"""How a supervised epoch is cut into steps, and the loss of one step: small strategy objects.

Every strategy passes over every training target once per epoch (targets: each user's items
before the validation item, position >= 1) and scores it with cross-entropy over all items of the
domain (Eq. 11/12 scores; padding excluded), so strategies differ in cost and in which examples
share a step, not in what is learned from:

* :class:`LastItemBatching` -- the paper's: every training prefix is its own example (``history,
  next item``), shuffled; a step holds ``batch_size`` prefixes.
* :class:`EveryPositionBatching` -- each user's training part is encoded once and a loss is taken
  at every position (causal attention makes position j see exactly its prefix); a step holds
  windows of about ``batch_size`` targets.

A strategy has ``num_targets``, ``epoch(epoch, seed) -> list of index batches`` and
``loss(model, batch, device) -> (mean loss, targets in the step)``.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F

from unisrec.models.encoder import length_buckets

Batching = Literal["last-item", "every-position"]
BATCHINGS: tuple[str, ...] = get_args(Batching)


def shuffled_batches(n: int, batch_size: int, rng: np.random.Generator, weights: np.ndarray | None = None) -> list[np.ndarray]:
    """Shuffled index batches; with ``weights`` (targets per row) each batch holds ~batch_size targets."""
    perm = rng.permutation(n)
    if weights is None:
        return [perm[i : i + batch_size] for i in range(0, n, batch_size)]
    before = np.cumsum(weights[perm]) - weights[perm]
    cut = np.flatnonzero(np.diff(before // batch_size)) + 1
    return np.split(perm, cut)


def cross_entropy_over_items(model: Any, reprs: list[torch.Tensor], targets: list[torch.Tensor], table: torch.Tensor, device: Any) -> torch.Tensor:
    """Eq. (11)/(12) scores of the step's sequence vectors against every item, mean cross-entropy."""
    logits = model.scores(torch.cat(reprs), table)
    return F.cross_entropy(logits, torch.cat(targets).to(device))


class LastItemBatching:
    """The paper's batching: one example per training prefix (the release's data loader)."""

    name = "last-item"

    def __init__(self, dataset: Any, max_history: int, batch_size: int):
        self.history, self.lengths, self.targets = dataset.examples("train", max_history)
        self.batch_size = batch_size
        self.num_targets = len(self.targets)

    def epoch(self, epoch: int, seed: int) -> list[np.ndarray]:
        return shuffled_batches(self.num_targets, self.batch_size, np.random.default_rng([seed, epoch]))

    def loss(self, model: Any, idx: np.ndarray, device: Any) -> tuple[torch.Tensor, int]:
        """The item table is adapted once; each length bucket is encoded padded to its own longest."""
        hist, lens, tgt = self.history[idx], self.lengths[idx], self.targets[idx]
        table = model.item_representations()
        reprs, targets = [], []
        for g in length_buckets(lens):
            width = int(lens[g].max())
            seq = torch.from_numpy(hist[g, :width]).to(device, non_blocking=True)
            reprs.append(model.sequence_representation(seq, torch.from_numpy(lens[g]).to(device), table))
            targets.append(torch.from_numpy(tgt[g]))
        return cross_entropy_over_items(model, reprs, targets, table, device), len(idx)


class EveryPositionBatching:
    """One causal pass per window of a user's training part, a loss at every counted position."""

    name = "every-position"

    def __init__(self, dataset: Any, max_history: int, batch_size: int):
        self.inputs, self.lengths, self.targets, self.counted = train_windows(dataset, max_history)
        self.weights = self.counted.sum(1)
        self.batch_size = batch_size
        self.num_targets = int(self.weights.sum())

    def epoch(self, epoch: int, seed: int) -> list[np.ndarray]:
        return shuffled_batches(len(self.lengths), self.batch_size, np.random.default_rng([seed, epoch]), self.weights)

    def loss(self, model: Any, idx: np.ndarray, device: Any) -> tuple[torch.Tensor, int]:
        inputs, lens, tgt, counted = self.inputs[idx], self.lengths[idx], self.targets[idx], self.counted[idx]
        table = model.item_representations()
        reprs, targets = [], []
        for g in length_buckets(lens):
            width = int(lens[g].max())
            seq = torch.from_numpy(inputs[g, :width]).to(device)
            out = model.encoder.forward_all(table[seq], torch.from_numpy(lens[g]).to(device))
            mask = counted[g, :width]
            reprs.append(out[torch.from_numpy(mask).to(device)])
            targets.append(torch.from_numpy(tgt[g, :width][mask]))
        return cross_entropy_over_items(model, reprs, targets, table, device), int(self.weights[idx].sum())


STRATEGIES = {cls.name: cls for cls in (LastItemBatching, EveryPositionBatching)}


def train_windows(dataset: Any, max_history: int, stride: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every-position training data: (inputs [W, H], lengths [W], targets [W, H], counted [W, H]).

    A user's training part s[0..m] (targets s[1..m], m = len - 3) becomes one window of inputs
    s[0:m] when m <= H. Longer parts get overlapping windows ending at H, H + stride, ..., m, and a
    window only counts the targets the previous one did not, so every target is trained once and
    sees at least ``stride`` (default H/2) earlier items -- the paper's batching gives it the last H.
    Vectorised over users.
    """
    h = max_history
    stride = stride or max(h // 2, 1)
    lengths = dataset.seq_lengths.astype(np.int64)
    starts = dataset.seq_offsets[:-1].astype(np.int64)
    m = lengths - 3
    users = np.nonzero(m >= 1)[0]
    m, starts = m[users], starts[users]
    count = np.where(m <= h, 1, 1 + np.ceil(np.maximum(m - h, 0) / stride).astype(np.int64))
    w_user = np.repeat(np.arange(len(users)), count)
    k = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    mm = m[w_user]
    end = np.minimum(h + k * stride, mm)
    prev_end = np.where(k == 0, 0, np.minimum(h + (k - 1) * stride, mm))
    begin = end - np.minimum(end, h)
    cols = np.arange(h)
    valid = cols[None, :] < (end - begin)[:, None]
    pos = starts[w_user][:, None] + begin[:, None] + cols[None, :]
    last = len(dataset.seq_items) - 1
    inputs = np.where(valid, dataset.seq_items[np.minimum(pos, last)], 0).astype(np.int64)
    targets = np.where(valid, dataset.seq_items[np.minimum(pos + 1, last)], 0).astype(np.int64)
    counted = valid & ((begin[:, None] + cols[None, :] + 1) > prev_end[:, None])
    return inputs, (end - begin).astype(np.int64), targets, counted
