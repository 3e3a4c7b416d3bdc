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
* :class:`ClozeBatching` -- BERT4Rec's own task (not next-item): random items of each user's
  training part are masked and predicted from both sides; a step holds ``batch_size`` users.

A strategy has ``num_targets``, ``epoch(epoch, seed) -> list of index batches`` and
``loss(model, batch, device) -> (mean loss, targets in the step)``.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F

from unisrec.models.encoder import encoder_passes

Batching = Literal["last-item", "every-position", "cloze"]
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
    one_pass: bool | None = None  # encoder_passes(): None = by device

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
        for g in encoder_passes(lens, device, self.one_pass):
            width = int(lens[g].max())
            seq = torch.from_numpy(hist[g, :width]).to(device, non_blocking=True)
            reprs.append(model.sequence_representation(seq, torch.from_numpy(lens[g]).to(device), table))
            targets.append(torch.from_numpy(tgt[g]))
        return cross_entropy_over_items(model, reprs, targets, table, device), len(idx)


class EveryPositionBatching:
    """One causal pass per window of a user's training part, a loss at every counted position.

    ``cap`` (``TrainConfig.max_targets_per_window``) splits a window holding more counted targets
    than that into pieces, each encoded over the window's prefix up to its last target: every target
    keeps exactly the context it had (the same function), but a step of ``batch_size`` targets now
    draws them from many more sessions (Online Retail, batch 2,048: ~66 sessions per step uncapped).
    Measured on Online Retail, SASRec: a cap of 8 did NOT close the gap to the paper's batching (valid
    NDCG@10 after epochs 1-2: 0.0204, 0.0211 capped vs 0.0213, 0.0206 uncapped vs 0.0199, 0.0332 paper)
    at 2.3x the compute, so it is off by default (results/online_retail/every_position_cap.md).
    """

    name = "every-position"
    one_pass: bool | None = None  # encoder_passes(): None = by device

    def __init__(self, dataset: Any, max_history: int, batch_size: int, cap: int = 0):
        windows = train_windows(dataset, max_history)
        self.inputs, self.lengths, self.targets, self.counted = split_windows(*windows, cap) if cap else windows
        self.weights = self.counted.sum(1)
        self.batch_size = batch_size
        self.num_targets = int(self.weights.sum())

    def epoch(self, epoch: int, seed: int) -> list[np.ndarray]:
        return shuffled_batches(len(self.lengths), self.batch_size, np.random.default_rng([seed, epoch]), self.weights)

    def loss(self, model: Any, idx: np.ndarray, device: Any) -> tuple[torch.Tensor, int]:
        inputs, lens, tgt, counted = self.inputs[idx], self.lengths[idx], self.targets[idx], self.counted[idx]
        table = model.item_representations()
        reprs, targets = [], []
        for g in encoder_passes(lens, device, self.one_pass):
            width = int(lens[g].max())
            seq = torch.from_numpy(inputs[g, :width]).to(device)
            out = model.position_representations(seq, torch.from_numpy(lens[g]).to(device), table)
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


def split_windows(inputs: np.ndarray, lengths: np.ndarray, targets: np.ndarray, counted: np.ndarray, cap: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split every window's counted targets into consecutive pieces of at most ``cap``; a piece keeps
    the window's inputs up to its last target (so each target sees exactly what it saw before) and
    counts only its own targets. Vectorised over windows."""
    w, h = counted.shape
    cols = np.arange(h)
    first = np.where(counted.any(1), counted.argmax(1), 0)
    n = counted.sum(1)
    pieces = np.maximum(np.ceil(n / cap).astype(np.int64), 1)
    row = np.repeat(np.arange(w), pieces)
    k = np.arange(int(pieces.sum())) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    start = first[row] + k * cap
    stop = np.minimum(start + cap, first[row] + n[row])  # one past the piece's last target column
    new_len = np.where(n[row] > 0, stop, lengths[row])
    keep = cols[None, :] < new_len[:, None]
    new_counted = counted[row] & (cols[None, :] >= start[:, None]) & (cols[None, :] < stop[:, None])
    return np.where(keep, inputs[row], 0), new_len.astype(np.int64), np.where(keep, targets[row], 0), new_counted


def training_sequences(dataset: Any, max_history: int) -> tuple[np.ndarray, np.ndarray]:
    """Each user's training part -- the items before the validation item, the last ``max_history``
    of them -- left-aligned and zero-padded: (sequences [U, H] int64, lengths [U]). Users whose
    training part has fewer than 2 items are left out (as in the other strategies, whose first
    target is a user's second item)."""
    lengths = dataset.seq_lengths.astype(np.int64)
    users = np.nonzero(lengths - 2 >= 2)[0]
    end = dataset.seq_offsets[users].astype(np.int64) + lengths[users] - 2  # the validation item's position
    n = np.minimum(lengths[users] - 2, max_history)
    cols = np.arange(max_history)
    valid = cols[None, :] < n[:, None]
    pos = np.minimum((end - n)[:, None] + cols[None, :], len(dataset.seq_items) - 1)
    return np.where(valid, dataset.seq_items[pos], 0).astype(np.int64), n


class ClozeBatching:
    """BERT4Rec's Cloze task (Sun et al. 2019, Sec. 3.6): mask items of a sequence, predict them.

    A sample is a user's training part (:func:`training_sequences`); an epoch passes over every
    user once, shuffled, ``batch_size`` sequences per step. Each real position is replaced by the
    model's ``[MASK]`` token with probability ``mask_ratio`` (at least one per sample); with
    probability ``last_item_share`` a sample instead masks only its last item (the inference
    situation: ``[MASK]`` after the history). The loss is Eq. (8): the mean cross-entropy over all
    items at the masked positions. The model supplies ``cloze_settings()`` (mask token, ratio,
    share: its variant decides) and ``bidirectional_outputs(seq, lengths) -> (B, L, d)``.

    The random numbers behind the masks are drawn in :meth:`epoch` from
    ``np.random.default_rng([seed, epoch])`` and turned into masks with the model's settings in
    :meth:`loss`, so an epoch's masks are the same on a resumed run. ``num_targets`` counts
    sequences; a step reports its masked positions as its targets.
    """

    name = "cloze"
    one_pass: bool | None = None  # encoder_passes(): None = by device

    def __init__(self, dataset: Any, max_history: int, batch_size: int):
        self.sequences, self.lengths = training_sequences(dataset, max_history)
        self.batch_size = batch_size
        self.num_targets = len(self.lengths)
        self.draws: dict[str, np.ndarray] | None = None

    def epoch(self, epoch: int, seed: int) -> list[np.ndarray]:
        rng = np.random.default_rng([seed, epoch])
        batches = shuffled_batches(self.num_targets, self.batch_size, rng)
        n, h = self.sequences.shape
        self.draws = {"position": rng.random((n, h), dtype=np.float32), "sample": rng.random(n), "fallback": rng.random(n)}
        return batches

    def masks(self, idx: np.ndarray, settings: Any) -> np.ndarray:
        """Bool (len(idx), H): the masked positions of samples ``idx`` this epoch."""
        if self.draws is None:
            raise RuntimeError("ClozeBatching.epoch() must be called before its masks are read")
        lens = self.lengths[idx]
        rows = np.arange(len(idx))
        real = np.arange(self.sequences.shape[1])[None, :] < lens[:, None]
        mask = (self.draws["position"][idx] < settings.mask_ratio) & real
        empty = ~mask.any(axis=1)  # at least one masked item per sample
        pick = np.minimum((self.draws["fallback"][idx] * lens).astype(np.int64), lens - 1)
        mask[rows[empty], pick[empty]] = True
        last = self.draws["sample"][idx] < settings.last_item_share
        mask[last] = False
        mask[rows[last], lens[last] - 1] = True
        return mask

    def loss(self, model: Any, idx: np.ndarray, device: Any) -> tuple[torch.Tensor, int]:
        settings = model.cloze_settings()
        seqs, lens = self.sequences[idx], self.lengths[idx]
        mask = self.masks(idx, settings)
        inputs = np.where(mask, settings.mask_token, seqs)
        table = model.item_representations()
        reprs, targets = [], []
        for g in encoder_passes(lens, device, self.one_pass):
            width = int(lens[g].max())
            m = mask[g, :width]
            positions, picked = masked_positions(m)  # the final layer runs at the masked positions only
            out = model.bidirectional_outputs_at(torch.from_numpy(inputs[g, :width]).to(device), torch.from_numpy(lens[g]).to(device),
                                                 torch.from_numpy(positions).to(device))
            reprs.append(out[torch.from_numpy(picked).to(device)])
            targets.append(torch.from_numpy(seqs[g, :width][m]))
        return cross_entropy_over_items(model, reprs, targets, table, device), int(mask.sum())


def masked_positions(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B, W) bool -> (positions (B, M) int64, valid (B, M) bool), M = the most True in a row (>= 1):
    row r's True columns in order, then 0 as filler. ``outputs_at(positions)[valid]`` lists the same
    positions in the same (row-major) order as ``outputs[mask]``."""
    counts = mask.sum(1)
    width = max(int(counts.max()) if len(counts) else 0, 1)
    valid = np.arange(width)[None, :] < counts[:, None]
    positions = np.zeros(valid.shape, dtype=np.int64)
    positions[valid] = np.nonzero(mask)[1]
    return positions, valid


class ClozePrefixBatching(ClozeBatching):
    """BERT4Rec's Cloze task over RecBole's samples: one sample per training *prefix*.

    RecBole, which produced the UniSRec paper's BERT4Rec number, feeds every sequential model the
    same prefix-augmented training data: one sample per training target, holding the history before
    it (the last ``max_history`` items). Its BERT4Rec drops the target and masks that history, so an
    epoch has one Cloze sample per training target -- the :class:`LastItemBatching` examples'
    histories -- instead of one per user: on Scientific 34,101 samples, 17 steps of 2,048, instead of
    5. Masks, loss and reproducibility as in :class:`ClozeBatching`. (A user's last training item is
    never inside a sample, as in RecBole: it is only the dropped target of the longest prefix.)
    """

    name = "cloze-prefix"

    def __init__(self, dataset: Any, max_history: int, batch_size: int):
        history, lengths, _ = dataset.examples("train", max_history)
        self.sequences, self.lengths = history, lengths
        self.batch_size = batch_size
        self.num_targets = len(self.lengths)
        self.draws = None


STRATEGIES[ClozeBatching.name] = ClozeBatching
STRATEGIES[ClozePrefixBatching.name] = ClozePrefixBatching
