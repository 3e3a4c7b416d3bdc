"""BERT4Rec: bidirectional attention, the [MASK] token, the Cloze batching of both variants, and a
run through `unisrec train bert4rec` + `unisrec evaluate` on small generated data (CPU, seconds)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from unisrec.data.dataset import Dataset
from unisrec.models import registry
from unisrec.models.bert4rec import BERT4Rec, BERT4RecConfig
from unisrec.models.encoder import EncoderConfig
from unisrec.models.popularity import evaluate_popularity
from unisrec.training.batching import ClozeBatching, ClozePrefixBatching, LastItemBatching, training_sequences
from test_finetune import make_toy

N = 30  # items of the hand-made models


def tiny(variant: str = "corrected", **kw) -> BERT4Rec:
    torch.manual_seed(0)
    enc = EncoderConfig(hidden_size=16, n_heads=2, inner_size=16, hidden_dropout=0.0, attn_dropout=0.0, max_seq_length=8)
    return BERT4Rec(BERT4RecConfig(variant=variant, encoder=enc, num_items=N, **kw)).eval()


def sequences(lengths: list[int], seed: int = 0) -> SimpleNamespace:
    """A stand-in dataset with the three arrays the batching reads."""
    rng = np.random.default_rng(seed)
    lens = np.asarray(lengths, dtype=np.int64)
    return SimpleNamespace(seq_lengths=lens, seq_offsets=np.concatenate([[0], np.cumsum(lens)]),
                           seq_items=rng.integers(1, N + 1, size=int(lens.sum())).astype(np.int32))


def test_attention_is_bidirectional_and_padding_is_masked():
    model = tiny()
    seq = torch.tensor([[3, 7, 9, 0, 0]])
    lens = torch.tensor([3])
    out = model.bidirectional_outputs(seq, lens)
    later_changed = model.bidirectional_outputs(torch.tensor([[3, 7, 12, 0, 0]]), lens)
    # a later item changes the output at an earlier position (a causal model could not)
    assert not torch.allclose(out[0, 0], later_changed[0, 0], atol=1e-4)
    causal = model.encoder.forward_all(model.item_embedding(seq), lens)
    causal_changed = model.encoder.forward_all(model.item_embedding(torch.tensor([[3, 7, 12, 0, 0]])), lens)
    assert torch.allclose(causal[0, 0], causal_changed[0, 0], atol=1e-6)  # the default pass stays causal
    # padding is masked: other padding contents or widths leave the real positions unchanged
    other_pad = model.bidirectional_outputs(torch.tensor([[3, 7, 9, 5, 6, 0]]), lens)
    assert torch.allclose(out[0, :3], other_pad[0, :3], atol=1e-5)
    # the sequence vector is the output at a [MASK] appended after the history
    seq_repr = model.sequence_representation(torch.tensor([[3, 7, 9]]), lens)
    appended = model.bidirectional_outputs(torch.tensor([[3, 7, 9, model.mask_token]]), torch.tensor([4]))
    assert torch.allclose(seq_repr[0], appended[0, 3], atol=1e-5)
    # a full history of max_seq_length items still has a position for the [MASK]
    full = torch.randint(1, N + 1, (2, 8))
    assert model.sequence_representation(full, torch.tensor([8, 5])).shape == (2, 16)


@pytest.mark.parametrize("variant", ["paper", "corrected"])
def test_the_mask_token_is_never_a_candidate(variant):
    model = tiny(variant)
    table = model.item_representations()
    assert table.shape == (N + 1, 16) and model.mask_token == N + 1
    with torch.no_grad():  # make [MASK] the best match of every sequence vector: it still cannot be ranked
        seq_repr = model.sequence_representation(torch.tensor([[1, 2, 3], [4, 5, 0]]), torch.tensor([3, 2]))
        model.item_embedding.weight[model.mask_token] = 100 * seq_repr[0]
        table = model.item_representations()
        scores = model.scores(seq_repr, table)
    assert scores.shape == (2, N + 1)
    assert torch.isinf(scores[:, 0]).all() and (scores[:, 0] < 0).all()
    expected = seq_repr @ model.item_embedding.weight[: N + 1].T
    if variant == "corrected":
        assert model.output_bias is not None and model.output_bias.shape == (N + 1,)
        expected = expected + model.output_bias
    else:  # RecBole <= 1.1: the Transformer output scores the table directly, no bias, no output layer
        assert model.output_bias is None and model.output_dense is None
        assert not any(k.startswith("output") for k in model.state_dict())
    assert torch.allclose(scores[:, 1:], expected[:, 1:].detach(), atol=1e-5)


def test_cloze_masks_ratio_last_item_samples_and_reproducibility():
    data = sequences([22] * 4000)  # training parts of 20 items
    batching = ClozeBatching(data, max_history=20, batch_size=512)
    seqs, lens = training_sequences(data, 20)
    assert batching.num_targets == 4000 and (lens == 20).all()
    assert np.array_equal(seqs[0], data.seq_items[:20])  # the items before the validation item
    batches = batching.epoch(3, seed=7)
    assert sorted(np.concatenate(batches).tolist()) == list(range(4000)) and max(map(len, batches)) == 512
    idx = np.arange(4000)
    masks = {v: batching.masks(idx, tiny(v).cloze_settings()) for v in ("paper", "corrected")}
    only_last = {v: (m.sum(1) == 1) & m[:, -1] for v, m in masks.items()}
    assert (masks["paper"].sum(1) >= 1).all() and (masks["corrected"].sum(1) >= 1).all()
    # paper: every position masked with probability 0.2 (+ the rare forced one when none was drawn)
    assert abs(masks["paper"].mean() - 0.2) < 0.01
    # last-item-only samples: absent in paper (chance: 0.2 * 0.8^19 ~ 0.3%), about half in corrected
    assert only_last["paper"].mean() < 0.01
    assert abs(only_last["corrected"].mean() - 0.5) < 0.03
    # the other corrected samples are ordinary Cloze samples with the same draws as paper
    assert np.array_equal(masks["corrected"][~only_last["corrected"]], masks["paper"][~only_last["corrected"]])
    # reproducible from (seed, epoch), different across epochs
    again = ClozeBatching(data, max_history=20, batch_size=512)
    assert all(np.array_equal(a, b) for a, b in zip(again.epoch(3, seed=7), batches))
    assert np.array_equal(again.masks(idx, tiny("paper").cloze_settings()), masks["paper"])
    again.epoch(4, seed=7)
    assert not np.array_equal(again.masks(idx, tiny("paper").cloze_settings()), masks["paper"])
    # a short sample still masks at least one item; a share set to 1 masks only last items
    short = ClozeBatching(sequences([4] * 200), max_history=20, batch_size=64)
    short.epoch(1, seed=0)
    assert (short.masks(np.arange(200), tiny("paper").cloze_settings()).sum(1) >= 1).all()
    all_last = short.masks(np.arange(200), tiny("corrected", last_item_share=1.0).cloze_settings())
    assert all_last[:, 1].all() and all_last.sum() == 200


def test_cloze_loss_is_the_cross_entropy_at_the_masked_positions():
    data = sequences([9, 6, 12, 5])
    batching = ClozeBatching(data, max_history=8, batch_size=4)
    batching.epoch(1, seed=0)
    model = tiny("corrected", mask_ratio=0.5)
    idx = np.array([2, 0, 3, 1])
    loss, n = batching.loss(model, idx, "cpu")
    mask = batching.masks(idx, model.cloze_settings())
    seqs, lens = batching.sequences[idx], batching.lengths[idx]
    assert n == mask.sum()
    # one unbucketed pass, by hand
    inputs = torch.from_numpy(np.where(mask, model.mask_token, seqs))
    out = model.bidirectional_outputs(inputs, torch.from_numpy(lens))[torch.from_numpy(mask)]
    logits = model.scores(out, model.item_representations())
    expected = torch.nn.functional.cross_entropy(logits, torch.from_numpy(seqs[mask]))
    assert torch.allclose(loss, expected, atol=1e-5)
    # the loss computes the final layer at the masked positions only: the same gradients
    params = [q for q in model.parameters() if q.requires_grad]
    for a, b in zip(torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True),
                    torch.autograd.grad(expected, params, allow_unused=True)):
        assert (a is None and b is None) or torch.allclose(a, b, atol=1e-5)
    loss.backward()  # the [MASK] row is an input, so it learns
    assert model.item_embedding.weight.grad[model.mask_token].abs().sum() > 0


def test_masked_positions_list_each_rows_masked_columns_in_the_order_boolean_indexing_reads_them():
    from unisrec.training.batching import masked_positions

    mask = np.array([[False, True, False, True], [False, False, False, False], [True, True, True, False]])
    positions, valid = masked_positions(mask)
    assert positions.tolist() == [[1, 3, 0], [0, 0, 0], [0, 1, 2]]
    assert valid.tolist() == [[True, True, False], [False, False, False], [True, True, True]]
    grid = np.arange(12).reshape(3, 4)
    assert np.take_along_axis(grid, positions, 1)[valid].tolist() == grid[mask].tolist()


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "toy"
    make_toy(path)
    return path


def test_cloze_prefix_samples_are_recboles_training_prefixes(toy):
    ds = Dataset.load(toy)
    prefix, per_user, last_item = ClozePrefixBatching(ds, 6, 64), ClozeBatching(ds, 6, 64), LastItemBatching(ds, 6, 64)
    # one sample per training target: the history before it (targets dropped), windowed like last-item's
    assert prefix.num_targets == last_item.num_targets > 3 * per_user.num_targets
    assert np.array_equal(prefix.sequences, last_item.history) and np.array_equal(prefix.lengths, last_item.lengths)
    # user 0's samples are its prefixes 1..n-1 of the training part (its last training item is only a target)
    train_part = ds.seq_items[ds.seq_offsets[0]: ds.seq_offsets[0] + ds.seq_lengths[0] - 2]
    first = [prefix.sequences[i, : prefix.lengths[i]].tolist() for i in range(len(train_part) - 1)]
    assert first == [train_part[max(0, t - 6): t].tolist() for t in range(1, len(train_part))]
    # an epoch visits every sample once; masks stay inside each sample, at least one per sample
    batches = prefix.epoch(1, seed=3)
    assert sorted(np.concatenate(batches).tolist()) == list(range(prefix.num_targets))
    idx = np.arange(prefix.num_targets)
    mask = prefix.masks(idx, tiny("paper").cloze_settings())
    assert (mask.sum(1) >= 1).all() and not (mask & (np.arange(6)[None, :] >= prefix.lengths[:, None])).any()


def test_bert4rec_trains_by_default_with_cloze_learns_and_reloads_through_the_cli(toy, tmp_path, capsys):
    from unisrec.cli import main
    from unisrec.models.model_dir import load_model

    assert registry.get("bert4rec").batchings == ("cloze-prefix", "cloze") and registry.get("bert4rec").default_batching == "cloze-prefix"
    popularity = evaluate_popularity(Dataset.load(toy))["recall@10"]
    for variant, epochs in (("corrected", 16), ("paper", 16)):
        out = tmp_path / variant
        args = ["train", "bert4rec", str(toy), "--output", str(out), "--batch-size", "32", "--lr", "3e-3", "--progress", "false",
                "--threads", "1", "--hidden-size", "32", "--inner-size", "32", "--hidden-dropout", "0.1", "--attn-dropout", "0.1",
                "--variant", variant, "--epochs", str(epochs)]
        assert main(args) == 0  # no --batching: the model's default (cloze-prefix) is used
        cfg = json.loads((out / "config.json").read_text())
        assert cfg["training"]["batching"] == "cloze-prefix" and cfg["model"]["variant"] == variant
        metrics = json.loads((out / "metrics.json").read_text())
        # the toy's users walk a cycle 80% of the time: far beyond the popularity ranking (0.16); after
        # 16 small epochs paper reaches ~0.55 and corrected ~0.42 (half its samples train one position)
        assert metrics["test"]["recall@10"] > 2 * popularity, (variant, metrics["test"], popularity)
        model = load_model(out)
        assert isinstance(model, BERT4Rec) and model.config.variant == variant
        capsys.readouterr()
        assert main(["evaluate", str(out), "--json", "--split", "test"]) == 0
        assert json.loads(capsys.readouterr().out) == metrics["test"]
    # an explicit batching the model does not support is still refused
    assert main([*args[:3], "--output", str(tmp_path / "x"), "--batching", "every-position", "--epochs", "1"]) == 2
