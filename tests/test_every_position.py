"""Every-position batching (the fast path): the same targets and contexts as the paper's batching,
every training target exactly once per epoch, no target ever sees the future, and the session cap
spreads a step over more sessions without changing any target's context."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unisrec.data.dataset import Dataset
from unisrec.models.checkpoint import config_from_dict
from unisrec.models.sasrec import SASRec, SASRecConfig
from unisrec.training.batching import EveryPositionBatching, LastItemBatching, split_windows, train_windows


def long_sessions(n_users: int = 30, n_items: int = 50, seed: int = 0, max_len: int = 40) -> Dataset:
    rng = np.random.default_rng(seed)
    lens = rng.integers(4, max_len, n_users)
    seqs = [rng.integers(1, n_items + 1, n) for n in lens]
    return Dataset("long", [str(i) for i in range(1, n_items + 1)], [""] * n_items, [f"u{i}" for i in range(n_users)],
                   np.concatenate([[0], np.cumsum(lens)]).astype(np.int64), np.concatenate(seqs).astype(np.int32))


def context_of_counted(inputs, lengths, targets, counted):
    """(context tuple, target) of every counted position: the inputs it may attend (causal)."""
    out = []
    for w, c in zip(*np.nonzero(counted)):
        assert c < lengths[w]
        out.append((tuple(inputs[w, : c + 1].tolist()), int(targets[w, c])))
    return sorted(out)


def sasrec_without_dropout(ds: Dataset, max_len: int) -> SASRec:
    """A small SASRec in eval mode, dropout off: losses compare exactly across batchings."""
    torch.manual_seed(0)
    cfg = config_from_dict(SASRecConfig, dict(num_items=ds.num_items, hidden_size=16, inner_size=16, max_seq_length=max_len,
                                              hidden_dropout=0.0, attn_dropout=0.0))
    return SASRec(cfg).eval()


@pytest.mark.parametrize("cap", [0, 1, 3, 8])
def test_each_target_once_with_the_paper_context(cap):
    ds = long_sessions()
    h = 60  # longer than every session: every-position must give exactly the paper's contexts
    b = EveryPositionBatching(ds, h, batch_size=37, cap=cap)
    hist, lens, tgt = ds.examples("train", h)
    paper = sorted((tuple(hist[i, : lens[i]].tolist()), int(tgt[i])) for i in range(len(tgt)))
    assert context_of_counted(b.inputs, b.lengths, b.targets, b.counted) == paper
    # an epoch's batches cover every window once, so every target once
    rows = np.concatenate(b.epoch(1, 2020))
    assert sorted(rows.tolist()) == list(range(len(b.lengths))) and b.num_targets == len(tgt)
    if cap:
        assert b.counted.sum(1).max() <= cap


def test_windows_never_let_a_target_see_the_future():
    # item ids increase along every session, so "the future" is any id >= the target's
    lens = [5, 40, 97]
    seqs = [np.arange(1000 * (u + 1), 1000 * (u + 1) + n) for u, n in enumerate(lens)]
    items = [str(i) for i in range(1, 4000)]
    ds = Dataset("inc", items, [""] * len(items), ["a", "b", "c"], np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
                 np.concatenate(seqs).astype(np.int32))
    for cap in (0, 3):
        b = EveryPositionBatching(ds, 20, batch_size=64, cap=cap)
        for w, c in zip(*np.nonzero(b.counted)):
            visible = b.inputs[w, : c + 1]
            assert (visible < b.targets[w, c]).all() and visible[-1] == b.targets[w, c] - 1
            assert len(visible) >= min(10, visible[-1] % 1000 + 1)  # >= max_history / 2 items, or the whole prefix
            assert (b.inputs[w, b.lengths[w]:] == 0).all()


def test_every_position_loss_equals_the_per_prefix_losses():
    """Dropout off: the mean cross-entropy of one every-position step over all windows equals the
    paper's per-prefix mean over all training prefixes (same targets, same contexts)."""
    ds = long_sessions()
    model = sasrec_without_dropout(ds, 60)
    paper = LastItemBatching(ds, 60, 10**6)
    ours = EveryPositionBatching(ds, 60, 10**6, cap=3)
    with torch.no_grad():
        a, n_a = paper.loss(model, np.arange(paper.num_targets), "cpu")
        b, n_b = ours.loss(model, np.arange(len(ours.lengths)), "cpu")
    assert n_a == n_b
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_the_cap_puts_more_sessions_into_a_step():
    ds = long_sessions(n_users=200, max_len=60)
    uncapped = EveryPositionBatching(ds, 50, batch_size=256, cap=0)
    capped = EveryPositionBatching(ds, 50, batch_size=256, cap=4)

    def sessions_per_step(b):
        first_item = [tuple(b.inputs[i][:1]) for i in range(len(b.lengths))]  # rows of one user share their first input
        return np.mean([len({first_item[i] for i in idx}) for idx in b.epoch(1, 0)])

    assert capped.num_targets == uncapped.num_targets
    assert sessions_per_step(capped) > 2 * sessions_per_step(uncapped)


@pytest.mark.parametrize("strategy", [LastItemBatching, EveryPositionBatching])
def test_one_padded_pass_equals_length_buckets(strategy):
    """Accelerators encode a step in one padded pass, CPUs bucket by length: same loss (dropout off)."""
    from unisrec.models.encoder import encoder_passes

    ds = long_sessions()
    model = sasrec_without_dropout(ds, 50)
    b = strategy(ds, 50, 10**6)
    idx = np.arange(len(b.lengths))
    assert len(encoder_passes(b.lengths, "cpu")) > 1 and len(encoder_passes(b.lengths, "cuda")) == 1
    with torch.no_grad():
        bucketed, n = b.loss(model, idx, "cpu")
        b.one_pass = True
        single, m = b.loss(model, idx, "cpu")
    assert n == m
    torch.testing.assert_close(bucketed, single, rtol=1e-5, atol=1e-6)
