"""Cross-domain steps look a domain's item table up once per step (training/joint.py: gather_rows, encode_last)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from unisrec.models.encoder import EncoderConfig, SequenceEncoder, length_buckets
from unisrec.training.joint import encode_last, gather_rows
from test_recguru import make_domain


def test_gather_rows_gives_the_same_values_and_gradient_as_looking_up_the_table():
    rng = np.random.default_rng(0)
    table = torch.randn(50, 4, dtype=torch.float64, requires_grad=True)
    seqs = rng.integers(0, 51 - 1, size=(6, 7))  # 0 = padding, looked up like any row
    negatives = rng.integers(1, 50, size=9)
    weights = torch.randn(6, 7, 4, dtype=torch.float64), torch.randn(9, 4, dtype=torch.float64)

    def loss(t, s, n):
        return (t[torch.from_numpy(s)] * weights[0]).sum() ** 2 + (t[torch.from_numpy(n)] * weights[1]).sum()

    direct = torch.autograd.grad(loss(table, seqs, negatives), table)[0]
    rows, (s, n) = gather_rows(table, seqs, negatives)
    assert s.shape == seqs.shape and n.shape == negatives.shape and len(rows) == len(np.unique(np.r_[seqs.ravel(), negatives]))
    assert torch.equal(rows[torch.from_numpy(s)], table[torch.from_numpy(seqs)])
    assert torch.equal(rows[torch.from_numpy(n)], table[torch.from_numpy(negatives)])
    assert torch.allclose(torch.autograd.grad(loss(rows, s, n), table)[0], direct)
    assert (n[:, None] == s.ravel()[None, :]).sum() == (negatives[:, None] == seqs.ravel()[None, :]).sum()  # equal ids stay equal


def test_encode_last_with_one_lookup_equals_a_lookup_per_length_bucket():
    torch.manual_seed(0)
    encoder = SequenceEncoder(EncoderConfig(hidden_size=8, inner_size=8, n_layers=1, n_heads=2, max_seq_length=20,
                                            hidden_dropout=0.0, attn_dropout=0.0)).eval()
    table = torch.randn(30, 8, requires_grad=True)
    rng = np.random.default_rng(1)
    lens = rng.integers(1, 20, size=40)
    seqs = np.where(np.arange(20)[None, :] < lens[:, None], rng.integers(1, 30, size=(40, 20)), 0)
    assert len(length_buckets(lens)) > 1

    def per_bucket():
        parts = torch.zeros(40, 8)
        for g in length_buckets(lens):
            w = int(lens[g].max())
            parts[torch.from_numpy(g)] = encoder(table[torch.from_numpy(seqs[g, :w])], torch.from_numpy(lens[g]))
        return parts

    ref, out = per_bucket(), encode_last(encoder, table, seqs, lens, "cpu")
    assert torch.allclose(out, ref, atol=1e-6)
    g_ref = torch.autograd.grad(ref.pow(2).sum(), table)[0]
    assert torch.allclose(torch.autograd.grad(out.pow(2).sum(), table)[0], g_ref, atol=1e-5)


def _table_fills(step, shape) -> int:
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step()
    return sum(e.count for e in prof.key_averages(group_by_input_shape=True)
               if e.key == "aten::zero_" and e.input_shapes and list(e.input_shapes[0]) == list(shape))


@pytest.mark.parametrize("name", ["recguru", "ccdr"])
def test_a_cross_domain_step_zeroes_a_table_sized_gradient_once_per_block_not_once_per_lookup(tmp_path, name):
    from unisrec.models import registry
    from unisrec.models.checkpoint import config_from_dict
    from unisrec.training.config import TrainConfig
    from unisrec.training.supervised import build_model

    make_domain(tmp_path / "target", seed=0)
    # a table shape no other tensor has; no user shared with the target (no overlap path)
    make_domain(tmp_path / "source", n_items=997, n_users=300, seed=2, step=3, user_ids=[f"s{k}" for k in range(300)])
    spec = registry.get(name)
    train = TrainConfig(batch_size=64, progress=False, threads=1, source=[str(tmp_path / "source")])
    config = config_from_dict(spec.config_class, {"hidden_size": 16, "inner_size": 16, "domain_batch_size": 64,
                                                  **({"text_neighbours": False} if name == "ccdr" else {})})
    model, ds, sources, _, _ = build_model(spec, tmp_path / "target", train, config)
    task = model.joint_task(ds, sources, train, torch.device("cpu"))

    def step():
        loss, _, _ = task.step_loss(task.batches(1)[0])
        loss.backward()

    fills = _table_fills(step, (998, 16))
    # RecGURU uses the source table in one block (encode + reconstruction: one gather); CCDR in two
    # (its source next-item loss, and the intra-domain loss, whose two augmented views share one)
    assert fills <= (1 if name == "recguru" else 2), fills


def test_a_signal_between_epochs_stops_a_task_with_extra_losses_cleanly(tmp_path):
    """A SIGTERM during validation stops the run before the next epoch's first step; a joint task's
    extra losses (RecGURU's, CCDR's) must not break that epoch's empty record (it crashed once)."""
    import os
    import signal

    from torch import nn

    from unisrec.errors import Stopped
    from unisrec.training.distributed import DistContext
    from unisrec.training.log import RunLog
    from unisrec.training.loop import LoopSettings, train_loop
    from unisrec.training.state import RunState, read_run_state

    module = nn.Linear(2, 2)

    class Task:
        unit = "targets"
        extra_names = ("next_item", "aux")

        def batches(self, epoch):
            return [0, 1, 2]

        def step_loss(self, batch):
            return (module.weight ** 2).sum(), 4, {"next_item": 1.0, "aux": 2.0}

        def validate(self):
            os.kill(os.getpid(), signal.SIGTERM)  # the end of a sitting, while validating
            return {"ndcg@10": 0.1}

        def checkpointed(self, run):
            pass

    optimizer = torch.optim.Adam(module.parameters(), lr=0.01)
    run = RunState()
    with pytest.raises(Stopped):
        train_loop(Task(), module, optimizer, run, LoopSettings(epochs=5), DistContext(), RunLog(tmp_path, progress=False), tmp_path)
    assert run.epoch == 1 and run.step_in_epoch == 0 and run.global_step == 3
    records = RunLog(tmp_path).records()
    assert [r["epoch"] for r in records] == [1] and records[0]["aux"] == 2.0
    assert read_run_state(tmp_path) is not None
