"""The ablation switches of docs/analyses.md: each changes exactly the part of UniSRec it names.

* ``whitening=False``: no learned bias b in Eq. (2) -- text_dim fewer parameters per expert, and each
  expert is the plain projection x W_1;
* ``n_experts=1``: one whitening projection, gate exactly 1, no gradient through the gate;
* ``lambda_si=0`` / ``lambda_ss=0``: the task is not computed, and the gradient is exactly the
  other task's (compared with the loss computed by hand);
* zero-shot ("w/o fine-tuning"): a `unisrec pretrain` checkpoint evaluated on another domain by text.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from unisrec.errors import UserError
from unisrec.models.adaptor import MoEAdaptor
from unisrec.models.checkpoint import config_from_dict
from unisrec.models.unisrec import UniSRec, UniSRecConfig
from unisrec.training.config import PretrainConfig
from unisrec.training.losses import sequence_item_contrastive_loss, sequence_sequence_contrastive_loss
from unisrec.training.pretrain import PretrainObjective

TEXT_DIM, N_ITEMS = 10, 20


def model(**kw) -> UniSRec:
    torch.manual_seed(0)
    cfg = config_from_dict(UniSRecConfig, {**dict(text_dim=TEXT_DIM, hidden_size=16, inner_size=16, n_experts=3, max_seq_length=8), **kw})
    m = UniSRec(cfg)
    feats = torch.randn(2 * N_ITEMS + 1, TEXT_DIM)  # clean rows 1..N, word-drop rows N+1..2N, as in pre-training
    feats[0] = 0
    m.set_item_features(feats)
    return m


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ------------------------------------------------------------------ whitening
def test_no_whitening_removes_exactly_the_bias_of_every_expert():
    with_pw, without = model(), model(whitening=False)
    assert n_params(with_pw) - n_params(without) == 3 * TEXT_DIM
    names_with, names_without = set(dict(with_pw.named_parameters())), set(dict(without.named_parameters()))
    assert names_with - names_without == {f"adaptor.experts.{k}.bias" for k in range(3)}
    assert names_without <= names_with


def test_whitening_subtracts_the_bias_and_no_whitening_is_a_plain_projection():
    torch.manual_seed(1)
    pw = MoEAdaptor(TEXT_DIM, 7, n_experts=2, dropout=0.0)
    plain = MoEAdaptor(TEXT_DIM, 7, n_experts=2, dropout=0.0, whitening=False)
    x = torch.randn(5, TEXT_DIM)
    with torch.no_grad():
        for e in pw.experts:
            e.bias.normal_()
    for e_pw, e_plain in zip(pw.experts, plain.experts):
        W = e_plain.linear.weight
        torch.testing.assert_close(e_plain(x), x @ W.T)  # Eq. (2) without b
        torch.testing.assert_close(e_pw(x), (x - e_pw.bias) @ e_pw.linear.weight.T)  # Eq. (2)
        assert not torch.allclose(e_pw(x), x @ e_pw.linear.weight.T)  # the bias really acts


def test_no_whitening_round_trips(tmp_path):
    m = model(whitening=False).eval()
    m.save_pretrained(tmp_path / "m")
    back = UniSRec.from_pretrained(tmp_path / "m")
    assert back.config.whitening is False
    back.set_item_features(m.item_features)
    back.eval()
    torch.testing.assert_close(back.item_representations(), m.item_representations())


# ------------------------------------------------------------------ MoE
def test_one_expert_is_one_whitening_projection_with_gate_one():
    torch.manual_seed(0)
    ad = MoEAdaptor(TEXT_DIM, 7, n_experts=1, dropout=0.0, noisy_gating=True)
    with torch.no_grad():
        ad.w_gate.normal_()
        ad.w_noise.normal_()
        ad.experts[0].bias.normal_()
    x = torch.randn(4, 6, TEXT_DIM)
    ad.train()  # gate noise on
    assert torch.equal(ad.gate(x), torch.ones(4, 6, 1))
    torch.testing.assert_close(ad(x), ad.experts[0](x), rtol=0, atol=0)
    ad(x).square().sum().backward()
    assert torch.count_nonzero(ad.w_gate.grad) == 0 and torch.count_nonzero(ad.w_noise.grad) == 0
    assert torch.count_nonzero(ad.experts[0].linear.weight.grad) > 0 and torch.count_nonzero(ad.experts[0].bias.grad) > 0
    # with several experts the gate does act (the test above could fail)
    ad3 = MoEAdaptor(TEXT_DIM, 7, n_experts=3, dropout=0.0, noisy_gating=True)
    with torch.no_grad():
        ad3.w_gate.normal_()
    ad3(x).square().sum().backward()
    assert torch.count_nonzero(ad3.w_gate.grad) > 0


# ------------------------------------------------------------------ pre-training tasks
def batch():
    rng = np.random.default_rng(0)
    lengths = torch.tensor([5, 3, 1, 4, 2, 5])
    history = torch.zeros(6, 5, dtype=torch.long)
    aug = torch.zeros(6, 5, dtype=torch.long)
    for i, n in enumerate(lengths.tolist()):
        history[i, :n] = torch.from_numpy(rng.integers(1, N_ITEMS + 1, n))
        aug[i, :n] = history[i, :n] + N_ITEMS * torch.from_numpy(rng.integers(0, 2, n))  # word-drop rows for some
    aug_lengths = lengths.clone()
    aug[0, 4], aug_lengths[0] = 0, 4  # one item-drop view
    targets = torch.tensor([3, 7, 3, 11, 2, 9])  # rows 0 and 2 share a target: a false negative
    return dict(history=history, lengths=lengths, aug_history=aug, aug_lengths=aug_lengths, targets=targets)


def grads(m: UniSRec, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    m.zero_grad(set_to_none=True)
    loss.backward()
    return {k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None}


def by_hand(m: UniSRec, b: dict, lambda_si: float, lambda_ss: float) -> torch.Tensor:
    """Eq. (8)-(10) written out: whole-table adaptation, one padded encoder call per view."""
    pos = torch.arange(len(b["targets"]))
    s = m.sequence_representation(b["history"], b["lengths"])
    loss = torch.zeros(())
    if lambda_si:
        loss = loss + lambda_si * sequence_item_contrastive_loss(s, m.item_representations(b["targets"]), b["targets"], b["targets"], pos)
    if lambda_ss:
        s_aug = m.sequence_representation(b["aug_history"], b["aug_lengths"])
        loss = loss + lambda_ss * sequence_sequence_contrastive_loss(s, s_aug, b["targets"], b["targets"], pos)
    return loss


@pytest.mark.parametrize("lambda_si,lambda_ss", [(0.0, 0.5), (1.0, 0.0), (1.0, 1e-3)])
def test_objective_gradient_is_that_of_the_tasks_it_weights(lambda_si, lambda_ss):
    m = model(hidden_dropout=0.0, attn_dropout=0.0, adaptor_dropout=0.0).eval()  # deterministic
    with torch.no_grad():
        for p in m.adaptor.parameters():
            p.normal_(0, 0.3)
    b = batch()
    loss, parts = PretrainObjective(m, lambda_ss, 0.07, lambda_si)(**b)
    assert set(parts) == {n for n, w in (("loss_si", lambda_si), ("loss_ss", lambda_ss)) if w}
    got = grads(m, loss)
    want = grads(m, by_hand(m, b, lambda_si, lambda_ss))
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-6, msg=k)
    if lambda_si and lambda_ss:
        return
    # the task left out really has a gradient of its own: adding it back changes the result
    both = grads(m, by_hand(m, b, lambda_si or 1.0, lambda_ss or 1.0))
    assert any(not torch.allclose(both[k], want[k], rtol=1e-3, atol=1e-6) for k in want)


def test_without_ss_the_views_are_not_encoded(monkeypatch):
    m = model().eval()
    rows = []
    original = m.encoder.forward_last
    monkeypatch.setattr(m.encoder, "forward_last", lambda x, ln: (rows.append(len(ln)), original(x, ln))[1])
    b = batch()
    PretrainObjective(m, 0.0, 0.07, 1.0)(**b)
    assert sum(rows) == 6
    rows.clear()
    PretrainObjective(m, 1e-3, 0.07, 1.0)(**b)
    assert sum(rows) == 12


def test_pretrain_config_refuses_no_task_and_negative_weights():
    with pytest.raises(UserError, match="both 0"):
        PretrainConfig(lambda_si=0.0, lambda_ss=0.0)
    with pytest.raises(UserError, match="lambda_si"):
        PretrainConfig(lambda_si=-1.0)
    with pytest.raises(UserError, match="lambda_ss"):
        PretrainConfig(lambda_ss=float("nan"))
    assert PretrainConfig().lambda_si == 1.0 and PretrainConfig().lambda_ss == 1e-3  # the paper's Eq. (10)


def test_flags_reach_the_configs():
    from unisrec.cli import build_parser
    from unisrec.config import config_from_args, configs_from_args
    from unisrec.training.config import TrainConfig

    args = build_parser("finetune").parse_args(["finetune", "d", "--output", "o", "--whitening", "false", "--n-experts", "1"])
    _, mcfg = configs_from_args((TrainConfig, UniSRecConfig), args)
    assert mcfg.whitening is False and mcfg.n_experts == 1
    args = build_parser("pretrain").parse_args(["pretrain", "d", "--output", "o", "--lambda-si", "0", "--lambda-ss", "1"])
    pcfg = config_from_args(PretrainConfig, args)
    assert pcfg.lambda_si == 0.0 and pcfg.lambda_ss == 1.0


# ------------------------------------------------------------------ end to end: w/o S-S, w/o fine-tuning
@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    from test_pretrain import make_domain

    root = tmp_path_factory.mktemp("ablation")
    return make_domain(root / "a", "a", seed=1), make_domain(root / "b", "b", n_items=40, seed=2)


def test_pretrain_without_ss_logs_only_si_and_zero_shot_evaluates(domains, tmp_path):
    from unisrec.data.dataset import Dataset
    from unisrec.evaluation.cli import evaluate_dir
    from unisrec.evaluation.metrics import evaluate_model
    from unisrec.training.pretrain import pretrain

    src, tgt = domains
    out = tmp_path / "pre"
    arch = config_from_dict(UniSRecConfig, dict(hidden_size=16, inner_size=16, n_experts=2, whitening=False))
    pretrain([src], out, PretrainConfig(epochs=1, batch_size=128, lambda_ss=0.0, device="cpu"), arch, show_progress=False)
    log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert "loss_si" in log[0] and "loss_ss" not in log[0]
    assert log[0]["loss"] == pytest.approx(log[0]["loss_si"])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["pretraining"]["config"]["lambda_ss"] == 0.0
    assert cfg["model"]["whitening"] is False and cfg["model"]["n_experts"] == 2
    # "w/o fine-tuning": the checkpoint scores the target's items by their text vectors
    got = evaluate_dir(str(out), "test", (10, 20), dataset=str(tgt), device="cpu")
    ds = Dataset.load(tgt)
    m = UniSRec.from_pretrained(out)
    m.set_item_features(np.array(ds.features(), dtype=np.float32))
    assert got == evaluate_model(m, ds, "test", (10, 20))
    assert 0.0 <= got["ndcg@10"] <= got["recall@10"] <= got["recall@20"] <= 1.0


@pytest.mark.parametrize("mode", ["inductive", "transductive"])
def test_zero_shot_of_a_finetuned_model_only_without_id_table(domains, tmp_path, mode):
    from unisrec.data.dataset import Dataset
    from unisrec.evaluation.cli import evaluate_dir
    from unisrec.evaluation.metrics import evaluate_model
    from unisrec.models.model_dir import load_model
    from unisrec.training.config import TrainConfig
    from unisrec.training.finetune import finetune

    src, tgt = domains
    train = TrainConfig(epochs=1, batch_size=128, progress=False, threads=1, eval_batch_size=64)
    finetune(src, tmp_path / "m", train, config_from_dict(UniSRecConfig, dict(mode=mode, hidden_size=16, inner_size=16, n_experts=2)))
    if mode == "transductive":  # an ID table belongs to the source catalogue
        with pytest.raises(UserError, match="catalogue"):
            evaluate_dir(str(tmp_path / "m"), "test", (10,), dataset=str(tgt), device="cpu")
        return
    got = evaluate_dir(str(tmp_path / "m"), "test", (10,), dataset=str(tgt), device="cpu")
    ds = Dataset.load(tgt)
    m = load_model(tmp_path / "m")
    m.set_item_features(np.array(ds.features(), dtype=np.float32))
    assert got == evaluate_model(m, ds, "test", (10,))


def test_benchmark_specs_load_with_valid_options():
    from pathlib import Path

    from unisrec.benchmark.runner import cell_configs
    from unisrec.benchmark.spec import load_spec

    root = Path(__file__).resolve().parents[1] / "configs" / "benchmarks"
    abl, abl_or = load_spec(root / "ablation.yaml"), load_spec(root / "ablation_online_retail.yaml")
    for spec in (abl, abl_or):
        assert list(spec.models) == ["UniSRec", "without PT", "without S-S", "without S-I", "without PW", "without MoE",
                                     "without FT", "Popularity"]
        assert [m.role for m in spec.models.values()] == ["ours"] + ["baseline"] * 6 + ["control"]
        assert spec.models["without PT"].pretrained is None
        assert all(m.pretrained for k, m in spec.models.items() if k not in ("without PT", "Popularity"))
        assert spec.models["without FT"].pretrained == spec.models["UniSRec"].pretrained  # zero-shot of the same checkpoint
        assert [m.model for m in spec.models.values() if m.trains_nothing] == ["zero-shot", "popularity"]
    assert {m.pretrained for m in abl.models.values()} == {m.pretrained for m in abl_or.models.values()}
    src, src_or = load_spec(root / "pretrain_sources.yaml"), load_spec(root / "pretrain_sources_online_retail.yaml")
    assert src.models["None"].pretrained is None and src_or.models["None"].pretrained is None
    # each target's sources are the domains foreign to it
    on = {d: [m.label for m in s.models.values() if m.runs_on(d)] for s in (src, src_or) for d in s.datasets}
    assert on == {"scientific": ["None", "Games", "Online Retail", "Games + Online Retail"],
                  "online_retail_shuffled": ["None", "Games", "Scientific", "Games + Scientific"]}
    # Online Retail's rows train as its Table 3 UniSRec_t cells do, so those cells can be shared
    t3 = load_spec(root / "table3_online_retail.yaml")
    assert cell_configs(src_or.models["None"], 2020) == cell_configs(t3.models["UniSRec_t"], 2020)
    assert cell_configs(abl_or.models["without PT"], 2020) == cell_configs(t3.models["UniSRec_t"], 2020)
    for start in (src_or.models["Games + Scientific"].pretrained, t3.models["UniSRec_t (pre-trained)"].pretrained):
        assert start.endswith("runs/pretrain/games/full+scientific/seed2020")
    for spec in (abl, abl_or, src, src_or):
        for m in spec.models.values():  # every option is a real flag of `unisrec finetune`
            if m.trains_nothing:
                continue
            train, model = cell_configs(m, 2020, threads=1)
            assert model.mode == "inductive" and train.epochs == 300
    assert cell_configs(abl_or.models["UniSRec"], 2020)[0].batching == "every-position"
