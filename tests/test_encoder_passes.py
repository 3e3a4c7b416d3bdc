"""On a GPU every encoder call site takes a step in one padded pass, on a CPU in length buckets
(models.encoder.encoder_passes): both give the same values (dropout off). The training strategies'
losses are compared in tests/test_every_position.py; here the cross-domain and pre-training sites,
forced to one pass on the CPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from unisrec.models.encoder import EncoderConfig, SequenceEncoder, encoder_passes, length_buckets


def one_pass(lens, device, one_pass=None):
    return [np.arange(len(lens))]


def test_the_choice_follows_the_device():
    lens = np.array([1, 3, 9, 40, 2])
    assert [g.tolist() for g in encoder_passes(lens, "cpu")] == [g.tolist() for g in length_buckets(lens)]
    assert [g.tolist() for g in encoder_passes(lens, "cuda")] == [[0, 1, 2, 3, 4]]
    assert len(encoder_passes(lens, "cpu", one_pass=True)) == 1 and len(encoder_passes(lens, "cuda", one_pass=False)) > 1


@pytest.fixture
def histories():
    rng = np.random.default_rng(3)
    lens = rng.integers(1, 20, size=48)
    seqs = np.where(np.arange(20)[None, :] < lens[:, None], rng.integers(1, 30, size=(48, 20)), 0)
    assert len(length_buckets(lens)) > 2
    return seqs, lens


def small_encoder() -> SequenceEncoder:
    torch.manual_seed(0)
    return SequenceEncoder(EncoderConfig(hidden_size=8, inner_size=8, n_layers=2, n_heads=2, max_seq_length=21,
                                         hidden_dropout=0.0, attn_dropout=0.0)).eval()


def test_cross_domain_encode_last(histories, monkeypatch):
    from unisrec.training import joint

    seqs, lens = histories
    enc, table = small_encoder(), torch.randn(30, 8)
    buckets = joint.encode_last(enc, table, seqs, lens, "cpu")
    monkeypatch.setattr(joint, "encoder_passes", one_pass)
    torch.testing.assert_close(joint.encode_last(enc, table, seqs, lens, "cpu"), buckets, rtol=1e-5, atol=1e-6)


def test_recguru_reconstruction(histories, monkeypatch):
    from unisrec.models import recguru

    seqs, lens = histories
    dec, table, gur = small_encoder(), torch.randn(30, 8), torch.randn(len(lens), 8)
    negatives = np.array([2, 5, 11, 17])
    buckets = recguru.reconstruction_loss(dec, table, gur, seqs, lens, negatives)
    monkeypatch.setattr(recguru, "encoder_passes", one_pass)
    torch.testing.assert_close(recguru.reconstruction_loss(dec, table, gur, seqs, lens, negatives), buckets, rtol=1e-5, atol=1e-6)


def test_pretraining_sequence_representations(histories, monkeypatch):
    from unisrec.models.unisrec import UniSRec, UniSRecConfig
    from unisrec.training import pretrain

    seqs, lens = histories
    torch.manual_seed(0)
    enc = EncoderConfig(hidden_size=8, inner_size=8, n_layers=2, n_heads=2, max_seq_length=20, hidden_dropout=0.0, attn_dropout=0.0)
    model = UniSRec(UniSRecConfig(text_dim=8, encoder=enc)).eval()
    table, s, ln = torch.randn(30, 8), torch.from_numpy(seqs), torch.from_numpy(lens)
    buckets = pretrain.encode_by_length(model, s, ln, table)
    monkeypatch.setattr(pretrain, "encoder_passes", one_pass)
    torch.testing.assert_close(pretrain.encode_by_length(model, s, ln, table), buckets, rtol=1e-5, atol=1e-6)
