"""FDSA: both streams (item IDs, frozen text vectors) are read and trained, the fusion, causality,
and a run through `unisrec train fdsa` + `unisrec evaluate` on small generated data (CPU, seconds)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unisrec.data.dataset import Dataset
from unisrec.errors import UserError
from unisrec.models import registry
from unisrec.models.encoder import EncoderConfig
from unisrec.models.fdsa import FDSA, FDSAConfig
from unisrec.models.popularity import evaluate_popularity
from test_finetune import make_toy

N, TEXT_DIM = 30, 12


def tiny(seed: int = 0) -> FDSA:
    torch.manual_seed(seed)
    enc = EncoderConfig(hidden_size=16, n_heads=2, inner_size=16, hidden_dropout=0.0, attn_dropout=0.0, max_seq_length=8)
    feats = torch.randn(N + 1, TEXT_DIM)
    feats[0] = 0
    return FDSA.for_dataset(FDSAConfig(encoder=enc), N, feats).eval()


HIST = torch.tensor([[3, 7, 9, 0], [5, 2, 0, 0]])
LENS = torch.tensor([3, 2])


def test_the_feature_stream_reads_the_text_vectors():
    model = tiny()
    table = model.item_representations()
    before = model.scores(model.sequence_representation(HIST, LENS, table), table)
    feats = model.item_features.clone()
    feats[7] = torch.randn(TEXT_DIM)  # an item of the first history only
    model.set_item_features(feats)
    after = model.scores(model.sequence_representation(HIST, LENS, table), table)
    assert not torch.allclose(before[0], after[0], atol=1e-4)
    assert torch.allclose(before[1], after[1], atol=1e-6)  # the other history does not hold item 7
    # the candidates are scored by their ID embeddings: changing a candidate's text changes no score column
    feats[20] = torch.randn(TEXT_DIM)
    model.set_item_features(feats)
    assert torch.allclose(after, model.scores(model.sequence_representation(HIST, LENS, table), table), atol=1e-6)
    with pytest.raises(ValueError, match="do not match"):
        model.set_item_features(torch.zeros(N, TEXT_DIM))


def test_fusion_of_two_causal_streams_by_hand():
    model = tiny()
    seq_repr = model.sequence_representation(HIST, LENS)
    # item stream: ID embeddings through the shared SequenceEncoder; feature stream: adapter(text) -> own layers
    item_out = model.encoder(model.item_embedding(HIST), LENS)
    x = model.encoder.embed(F.relu(model.adapter(model.item_features[HIST])))
    mask = torch.arange(4)[None, :] <= torch.arange(4)[:, None]  # causal, read at the last real item
    for b in range(2):
        xb = x[b : b + 1, : LENS[b]]
        for layer in model.feature_layers:
            xb = layer(xb, mask[: LENS[b], : LENS[b]].view(1, 1, LENS[b], LENS[b]))
        fused = model.encoder.norm(model.fusion(torch.cat([item_out[b], xb[0, -1]])))
        assert torch.allclose(seq_repr[b], fused, atol=1e-5)
    # causal and padding-blind: later items or padding contents do not change a prefix's vector
    longer = model.sequence_representation(torch.tensor([[3, 7, 9, 11], [5, 2, 8, 4]]), LENS)
    assert torch.allclose(seq_repr, longer, atol=1e-5)
    scores = model.scores(seq_repr, model.item_representations())
    assert scores.shape == (2, N + 1) and torch.isinf(scores[:, 0]).all()
    assert torch.allclose(scores[:, 1:], (seq_repr @ model.item_embedding.weight.T)[:, 1:], atol=1e-5)


def test_gradients_reach_both_streams():
    model = tiny().train()
    table = model.item_representations()
    loss = F.cross_entropy(model.scores(model.sequence_representation(HIST, LENS, table), table), torch.tensor([4, 6]))
    loss.backward()
    groups = {"item embedding": model.item_embedding, "item stream": model.encoder.layers, "feature stream": model.feature_layers,
              "adapter": model.adapter, "positions": model.encoder.position_embedding, "fusion": model.fusion}
    for name, module in groups.items():
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0, name
    assert not model.item_features.requires_grad  # the text vectors stay frozen


def test_random_features_reproduce_the_release_and_survive_a_reload(tmp_path):
    torch.manual_seed(1)
    enc = EncoderConfig(hidden_size=16, n_heads=2, inner_size=16, max_seq_length=8)
    model = FDSA.for_dataset(FDSAConfig(encoder=enc, random_features=True), N, torch.ones(N + 1, TEXT_DIM))
    table = model.item_features.clone()
    assert abs(float(table.std()) - 0.02) < 0.003  # N(0, 0.02) noise, not the given vectors
    model.set_item_features(torch.full((N + 1, TEXT_DIM), 5.0))
    assert torch.equal(model.item_features, table)
    model.save_pretrained(tmp_path / "m")
    assert torch.equal(FDSA.from_pretrained(tmp_path / "m").item_features, table)  # saved with the weights


def test_fdsa_needs_features():
    with pytest.raises(UserError, match="text features"):
        FDSA.for_dataset(FDSAConfig(), N, None)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "toy"
    make_toy(path)
    return path


def test_fdsa_learns_saves_reloads_and_evaluates_through_the_cli(toy, tmp_path, capsys):
    from unisrec.cli import main
    from unisrec.models.model_dir import load_model

    assert registry.get("fdsa").batchings == ("last-item", "every-position")
    out = tmp_path / "fdsa"
    args = ["train", "fdsa", str(toy), "--output", str(out), "--batch-size", "64", "--lr", "3e-3", "--progress", "false",
            "--threads", "1", "--hidden-size", "32", "--inner-size", "32", "--hidden-dropout", "0.1", "--attn-dropout", "0.1"]
    assert main([*args, "--epochs", "4"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "fdsa" and cfg["model"]["text_dim"] == 16 and cfg["dataset"]["features"] == "rand"
    metrics = json.loads((out / "metrics.json").read_text())
    popularity = evaluate_popularity(Dataset.load(toy))["recall@10"]
    assert metrics["test"]["recall@10"] > max(3 * popularity, 0.5), (metrics["test"], popularity)
    # reloaded with its catalogue's features: the same scores as the features of the dataset give
    model = load_model(out)
    assert isinstance(model, FDSA)
    feats = torch.from_numpy(np.array(Dataset.load(toy).features("rand")))
    assert torch.equal(model.item_features, feats)
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json", "--split", "test"]) == 0
    assert json.loads(capsys.readouterr().out) == metrics["test"]
    # the fast path trains it too (its every-position loss is the per-prefix loss: the test below)
    assert main([*args, "--epochs", "4", "--output", str(tmp_path / "ep"), "--batching", "every-position", "--batch-size", "256"]) == 0
    fast = json.loads((tmp_path / "ep" / "metrics.json").read_text())
    assert fast["test"]["recall@10"] > max(3 * popularity, 0.5), (fast["test"], popularity)
    assert main([*args, "--epochs", "1", "--output", str(tmp_path / "x"), "--batching", "cloze"]) == 2


def test_every_position_loss_equals_the_per_prefix_losses():
    """Dropout off: one every-position pass over all windows gives the mean cross-entropy of the
    paper's per-prefix examples -- both streams and the fusion see exactly each prefix."""
    from test_every_position import long_sessions
    from unisrec.training.batching import EveryPositionBatching, LastItemBatching

    ds = long_sessions(n_items=N, max_len=20)
    torch.manual_seed(0)
    enc = EncoderConfig(hidden_size=16, n_heads=2, inner_size=16, hidden_dropout=0.0, attn_dropout=0.0, max_seq_length=20)
    model = FDSA.for_dataset(FDSAConfig(encoder=enc), N, torch.randn(N + 1, TEXT_DIM)).eval()
    paper, ours = LastItemBatching(ds, 20, 10**6), EveryPositionBatching(ds, 20, 10**6)
    with torch.no_grad():
        a, n_a = paper.loss(model, np.arange(paper.num_targets), "cpu")
        b, n_b = ours.loss(model, np.arange(len(ours.lengths)), "cpu")
    assert n_a == n_b
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # and row j of position_representations is sequence_representation of the prefix ending at j
    seq, lens = torch.from_numpy(ours.inputs[:3]), torch.from_numpy(ours.lengths[:3])
    with torch.no_grad():
        table = model.item_representations()
        every = model.position_representations(seq, lens, table)
        for j in range(1, int(lens.min()) + 1):
            torch.testing.assert_close(every[:, j - 1], model.sequence_representation(seq[:, :j], torch.full((3,), j), table),
                                       rtol=1e-5, atol=1e-6)


def test_feature_stream_last_position_shortcut_matches_the_full_stream_values_and_gradients():
    """The feature stream computes its final layer at the last position only; it must be the same
    function as running every layer everywhere and reading that row (values and gradients)."""
    enc = EncoderConfig(hidden_size=16, n_heads=2, inner_size=16, n_layers=3, hidden_dropout=0.0, attn_dropout=0.0, max_seq_length=8)
    torch.manual_seed(1)
    feats = torch.randn(N + 1, TEXT_DIM)
    feats[0] = 0
    model = FDSA.for_dataset(FDSAConfig(encoder=enc), N, feats).eval()
    hist = torch.tensor([[3, 7, 9, 4, 0], [5, 2, 0, 0, 0], [1, 0, 0, 0, 0]])
    lens = torch.tensor([4, 2, 1])
    x = model.item_feature_vectors(hist)
    fast = model.feature_stream(x, lens)
    full = model.feature_stream_all(x, lens)[torch.arange(3), lens - 1]
    assert torch.allclose(fast, full, atol=1e-5)
    g_fast = torch.autograd.grad(fast.square().sum(), model.adapter.weight)[0]
    g_full = torch.autograd.grad(model.feature_stream_all(model.item_feature_vectors(hist), lens)[torch.arange(3), lens - 1].square().sum(),
                                 model.adapter.weight)[0]
    assert g_fast.abs().sum() > 0 and torch.allclose(g_fast, g_full, atol=1e-5)
