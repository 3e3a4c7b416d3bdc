"""S3-Rec: the four pre-training objectives (hand-computed values), the pre-training batch, the
bidirectional/causal split, the pre-training stage (loss goes down, exact and never repeated on
resume) and fine-tuning that learns far beyond popularity, on small generated data."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from unisrec.data.dataset import Dataset
from unisrec.errors import UserError
from unisrec.models.checkpoint import config_from_dict
from unisrec.models.s3rec import (
    S3Rec,
    S3RecConfig,
    S3RecPretrainTask,
    associated_attribute_prediction_loss,
    make_pretrain_batch,
    masked_attribute_prediction_loss,
    masked_item_prediction_loss,
    segment_prediction_loss,
)
from unisrec.training.config import TrainConfig
from unisrec.training.supervised import train_model
from test_finetune import make_toy

SMALL = dict(hidden_size=16, inner_size=16, pretrain_batch_size=256)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "toy"
    make_toy(path)
    return path


def configs(**kw):
    base = dict(epochs=3, batch_size=128, lr=3e-3, progress=False, threads=1, eval_batch_size=256, pretrain_epochs=2, **SMALL)
    base.update(kw)
    train = {k: v for k, v in base.items() if k in TrainConfig.__dataclass_fields__}
    return TrainConfig(**train), config_from_dict(S3RecConfig, {k: v for k, v in base.items() if k not in train})


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# ------------------------------------------------------------------------- the four objectives
def test_attribute_objectives_are_bce_over_all_attributes_hand_computed():
    ident = nn.Identity()
    attributes = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # items 1, 2, 3
    # AAP: one unmasked position whose state is (1, 0), item 1 -> logits (1, 0, 1), positive = column 0
    aap = associated_attribute_prediction_loss(torch.tensor([[1.0, 0.0]]), attributes, torch.tensor([1]), ident)
    expected = -math.log(sig(1)) - math.log(1 - sig(0)) - math.log(1 - sig(1))
    assert aap.item() == pytest.approx(expected, rel=1e-6)
    # MAP: two masked positions, states (0, 2) [item 2] and (-1, 0) [item 3], summed
    map_ = masked_attribute_prediction_loss(torch.tensor([[0.0, 2.0], [-1.0, 0.0]]), attributes, torch.tensor([2, 3]), ident)
    row1 = -math.log(1 - sig(0)) - math.log(sig(2)) - math.log(1 - sig(2))
    row2 = -math.log(1 - sig(-1)) - math.log(1 - sig(0)) - math.log(sig(-1))
    assert map_.item() == pytest.approx(row1 + row2, rel=1e-6)
    # the head W is applied to the state before the dot product: a swap of the two coordinates
    swap = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        swap.weight.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    swapped = associated_attribute_prediction_loss(torch.tensor([[1.0, 0.0]]), attributes, torch.tensor([1]), swap)
    assert swapped.item() == pytest.approx(-math.log(sig(0)) - math.log(1 - sig(1)) - math.log(1 - sig(1)), rel=1e-6)


def test_pairwise_objectives_are_the_difference_of_two_sigmoids_hand_computed():
    ident = nn.Identity()
    # MIP: state (1, 1), masked item embedding (1, 0), negative (0, 0): -log sigma(sigma(1) - sigma(0))
    mip = masked_item_prediction_loss(torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]]), ident)
    assert mip.item() == pytest.approx(-math.log(sig(sig(1) - sig(0))), rel=1e-6)
    # SP: context (2, 0), own segment (1, 0), other segment (-1, 0): -log sigma(sigma(2) - sigma(-2)); two rows summed
    ctx = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    sp = segment_prediction_loss(ctx, torch.tensor([[1.0, 0.0], [0.0, 3.0]]), torch.tensor([[-1.0, 0.0], [0.0, 3.0]]), ident)
    assert sp.item() == pytest.approx(-math.log(sig(sig(2) - sig(-2))) + math.log(2.0), rel=1e-6)
    # a better-separated pair gives a lower loss, and gradients reach both sides
    pos = torch.tensor([[1.0, 0.0]], requires_grad=True)
    loss = masked_item_prediction_loss(torch.tensor([[3.0, 0.0]]), pos, torch.tensor([[-1.0, 0.0]]), ident)
    assert loss.item() < mip.item()
    loss.backward()
    assert pos.grad is not None and pos.grad[0, 0] < 0  # raising the positive's score lowers the loss


# ------------------------------------------------------------------------- batch and encoder
def test_pretrain_batch_masks_real_items_draws_negatives_outside_the_history_and_cuts_segments():
    rng = np.random.default_rng(0)
    n_items, b, w = 30, 150, 8
    lens = rng.integers(1, w + 1, size=b)
    hist = np.where(np.arange(w)[None, :] < lens[:, None], rng.integers(1, n_items + 1, size=(b, w)), 0)
    out = make_pretrain_batch(hist, lens, n_items, 0.2, np.random.default_rng(1))
    real = np.arange(w)[None, :] < lens[:, None]
    mask_id = n_items + 1
    assert not (out.mask & ~real).any()
    assert (out.masked == np.where(out.mask, mask_id, hist)).all()
    assert abs(out.mask.sum() / real.sum() - 0.2) < 0.04
    assert (out.negatives[out.mask] >= 1).all() and (out.negatives[out.mask] <= n_items).all()
    for r, c in zip(*np.nonzero(out.mask)):
        assert out.negatives[r, c] not in hist[r, : lens[r]]
    long_seq = hist[real]
    for r in range(b):
        n = lens[r]
        if n < 2:  # too short for a segment: all three views are the history
            assert (out.seg_context[r] == hist[r]).all() and (out.seg_negative[r] == hist[r]).all()
            continue
        seg = np.nonzero(out.seg_context[r, :n] == mask_id)[0]
        assert 1 <= len(seg) <= n // 2 and (np.diff(seg) == 1).all()  # one contiguous run
        outside = np.setdiff1d(np.arange(n), seg)
        assert (out.seg_positive[r, seg] == hist[r, seg]).all() and (out.seg_positive[r, outside] == mask_id).all()
        assert (out.seg_negative[r, outside] == mask_id).all()
        neg = out.seg_negative[r, seg]
        starts = [s for s in range(len(long_seq) - len(seg) + 1) if (long_seq[s : s + len(seg)] == neg).all()]
        assert starts  # a run of the batch's histories laid end to end
        assert (out.seg_context[r, n:] == 0).all() and (out.seg_positive[r, n:] == 0).all()


def test_pretraining_attention_is_bidirectional_finetuning_causal_and_padding_never_matters(toy):
    torch.manual_seed(0)
    ds = Dataset.load(toy)
    model = S3Rec.for_dataset(config_from_dict(S3RecConfig, dict(max_seq_length=6, **SMALL)), ds.num_items, torch.from_numpy(np.array(ds.features())))
    task = S3RecPretrainTask(model, ds, TrainConfig(max_history=6), torch.device("cpu"))
    task.module.eval()  # no dropout: outputs are functions of the input
    table = model.item_embedding.weight
    lens = np.array([4, 4])
    (rows, out), = task.encode(np.array([[1, 2, 3, 4], [1, 2, 7, 8]]), lens, table)
    assert list(rows) == [0, 1] and not torch.allclose(out[0, 0], out[1, 0])  # position 0 sees later items in pre-training
    seq = torch.tensor([[1, 2, 3, 4], [1, 2, 7, 8]])
    fine = model.sequence_representation(seq, torch.tensor([2, 2]))
    torch.testing.assert_close(fine[0], fine[1])  # fine-tuning reads left to right only
    (_, padded), = task.encode(np.array([[1, 2, 3, 4, 0, 0], [1, 2, 7, 8, 0, 0]]), lens, table)
    torch.testing.assert_close(padded, out)  # each length group is trimmed to its longest; padding changes nothing
    (_, wide), = task.encode(np.array([[1, 2, 3, 4, 0, 0]]), np.array([4]), table)
    torch.testing.assert_close(model.encoder.forward_all(table[torch.tensor([[1, 2, 3, 4, 0, 0]])], torch.tensor([4]), causal=False)[:, :4], wide)
    # SP's passes compute the final layer at the last real item only: the same states as encode() there
    seqs, lens = np.array([[1, 2, 3, 4, 5], [6, 7, 0, 0, 0], [8, 9, 3, 0, 0]]), np.array([5, 2, 3])
    picked = torch.cat([out[torch.arange(len(g)), torch.from_numpy(lens[g] - 1)] for g, out in task.encode(seqs, lens, table)])
    torch.testing.assert_close(task.last_states(seqs, lens, table), picked)


# ------------------------------------------------------------------------- the stages
def _log(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_pretraining_lowers_its_loss_and_finetuning_learns_far_beyond_popularity(toy, tmp_path):
    from unisrec.cli import main
    from unisrec.models.popularity import evaluate_popularity

    out = tmp_path / "s3"
    args = ["train", "s3rec", str(toy), "--output", str(out), "--hidden-size", "16", "--inner-size", "16", "--lr", "0.005",
            "--batch-size", "128", "--pretrain-batch-size", "128", "--progress", "false", "--threads", "1"]
    assert main([*args, "--pretrain-epochs", "3", "--epochs", "4"]) == 0
    log = _log(out / "pretrain" / "training_log.jsonl")
    assert [r["epoch"] for r in log] == [1, 2, 3]
    assert {"aap", "mip", "map", "sp"} <= set(log[0])
    assert log[-1]["loss"] < log[1]["loss"] < 0.9 * log[0]["loss"]  # the weighted sum of the four objectives goes down
    assert log[-1]["aap"] < log[0]["aap"] and log[-1]["map"] < log[0]["map"]
    done = json.loads((out / "pretrain" / "done.json").read_text())
    assert done["epochs_run"] == 3 and done["stop_reason"] == "max_epochs"
    metrics = json.loads((out / "metrics.json").read_text())
    pop = evaluate_popularity(Dataset.load(toy))
    # the toy's users walk i -> i+1 with probability 0.8: popularity cannot know that
    assert metrics["test"]["recall@10"] > pop["recall@10"] + 0.3 and metrics["test"]["ndcg@10"] > 2 * pop["ndcg@10"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "s3rec" and cfg["model"]["pretrain_epochs"] == 3
    # a resumed run does not repeat the finished pre-training: its log, weights and marker stay as they were
    before = {p: p.read_bytes() for p in (out / "pretrain").glob("*") if p.is_file()}
    assert main([*args, "--pretrain-epochs", "3", "--epochs", "5", "--resume"]) == 0
    assert {p: p.read_bytes() for p in (out / "pretrain").glob("*") if p.is_file()} == before
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == 5
    assert main([*args, "--pretrain-epochs", "3", "--epochs", "5"]) == 2  # no --resume: refused, nothing overwritten


@pytest.mark.parametrize("cut_by", ["crash", "signal"])
def test_an_interrupted_pretraining_resumes_exactly_and_fitting_then_starts(toy, tmp_path, monkeypatch, cut_by):
    import os
    import signal

    from unisrec.errors import Stopped

    train, model_cfg = configs(pretrain_epochs=2, epochs=1, pretrain_batch_size=300)
    full = tmp_path / "full"
    train_model("s3rec", toy, full, train, model_cfg)
    original = S3RecPretrainTask.step_loss
    calls = {"n": 0}

    def cut_in_epoch_2(self, batch):
        calls["n"] += 1
        if calls["n"] == 6:  # 4 steps per epoch: epoch 1 is checkpointed, epoch 2 is cut
            if cut_by == "crash":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGTERM)  # this step finishes, its resume state is written
        return original(self, batch)

    cut = tmp_path / "cut"
    monkeypatch.setattr(S3RecPretrainTask, "step_loss", cut_in_epoch_2)
    before = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(KeyboardInterrupt if cut_by == "crash" else Stopped):
            train_model("s3rec", toy, cut, train, model_cfg)
    finally:
        signal.signal(signal.SIGTERM, before)
    monkeypatch.setattr(S3RecPretrainTask, "step_loss", original)
    assert not (cut / "pretrain" / "done.json").exists() and not (cut / "metrics.json").exists()
    with pytest.raises(UserError, match="pass --resume"):
        train_model("s3rec", toy, cut, train, model_cfg)
    # --resume (with flags that differ: the stage's saved configs win, as for fitting)
    other_train, other_model = configs(pretrain_epochs=2, epochs=1, pretrain_batch_size=300, hidden_size=32, inner_size=32)
    train_model("s3rec", toy, cut, other_train, other_model, resume=True)
    # a signal's stop logs epoch 2's first two steps (partial), the resumed run the rest
    assert [r["epoch"] for r in _log(cut / "pretrain" / "training_log.jsonl")] == ([1, 2] if cut_by == "crash" else [1, 2, 2])
    from safetensors.torch import load_file

    a, b = load_file(str(full / "pretrain" / "model.safetensors")), load_file(str(cut / "pretrain" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k])  # the same weights as the uninterrupted stage
    assert json.loads((cut / "metrics.json").read_text())["test"] == json.loads((full / "metrics.json").read_text())["test"]


def test_no_features_no_pretraining_stage_and_the_release_random_attributes(toy, tmp_path):
    with pytest.raises(UserError, match="text features"):
        S3Rec.for_dataset(S3RecConfig(), 5, None)
    train, model_cfg = configs(pretrain_epochs=0, epochs=1)
    train_model("s3rec", toy, tmp_path / "plain", train, model_cfg)
    assert not (tmp_path / "plain" / "pretrain").exists()  # pretrain_epochs 0: SASRec from scratch
    ds = Dataset.load(toy)
    feats = torch.from_numpy(np.array(ds.features()))
    model = S3Rec.for_dataset(config_from_dict(S3RecConfig, dict(random_attributes=True, **SMALL)), ds.num_items, feats)
    task = S3RecPretrainTask(model, ds, TrainConfig(), torch.device("cpu"))
    assert task.features.shape == feats.shape and not torch.allclose(task.features, feats)
    assert task.features.std().item() == pytest.approx(0.02, rel=0.1)


def test_pretraining_stage_weights_follow_the_umask(toy, tmp_path):
    """OUTPUT/pretrain/model.safetensors gets the umask's mode like every other weight file (safetensors
    alone writes 0600)."""
    import os

    train, model_cfg = configs(pretrain_epochs=1, epochs=1)
    old = os.umask(0o002)
    try:
        train_model("s3rec", toy, tmp_path / "m", train, model_cfg)
    finally:
        os.umask(old)
    modes = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in (tmp_path / "m").rglob("*.safetensors")}
    assert "m/pretrain/model.safetensors" in modes and set(modes.values()) == {oct(0o664)}, modes
