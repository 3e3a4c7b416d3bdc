"""RecGURU: the adversarial losses (hand-computed, each reaching only its own side), the encoder's
adversarial updates leading to domain confusion on a toy, the autoencoder's teacher forcing, the
overlap path on generated data with overlapping users, and `unisrec train recguru TARGET --source DIR`
end to end (beyond popularity, evaluate, exact resume, a benchmark cell with `source:`)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from unisrec.data.dataset import Dataset
from unisrec.errors import UserError
from unisrec.models.encoder import EncoderConfig, SequenceEncoder
from unisrec.models.recguru import (
    RecGURU,
    RecGURUConfig,
    confusion_loss,
    discriminator_loss,
    generalized_user_representation,
    overlap_loss,
    reconstruction_loss,
)
from unisrec.training.joint import DomainSequences, link_users

SMALL = ["--hidden-size", "16", "--inner-size", "16", "--batch-size", "128", "--lr", "0.005", "--domain-batch-size", "64",
         "--progress", "false", "--threads", "1"]


def make_domain(path, n_items=40, n_users=240, seed=0, step=1, user_ids=None, name=None):
    """A generated domain: users mostly walk the item cycle i -> i + step (80%), else jump at random."""
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(n_users):
        s = [int(rng.integers(1, n_items + 1))]
        for _ in range(int(rng.integers(5, 12)) - 1):
            s.append((s[-1] - 1 + step) % n_items + 1 if rng.random() < 0.8 else int(rng.integers(1, n_items + 1)))
        seqs.append(s)
    lens = [len(s) for s in seqs]
    name = name or path.name
    ds = Dataset(name=name, item_ids=[f"{name}-i{k}" for k in range(1, n_items + 1)],
                 item_texts=[f"{name} item {k}." for k in range(1, n_items + 1)],
                 user_ids=user_ids or [f"u{k}" for k in range(n_users)],
                 seq_offsets=np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
                 seq_items=np.concatenate(seqs).astype(np.int32))
    ds.save(path)
    return Dataset.load(path)


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A target, a source sharing 100 of its user ids (overlapping users) and a source sharing none."""
    root = tmp_path_factory.mktemp("domains")
    make_domain(root / "target", seed=0)
    make_domain(root / "overlap", n_items=60, n_users=300, seed=1, step=2,
                user_ids=[f"u{k}" for k in range(100)] + [f"s{k}" for k in range(200)])
    make_domain(root / "disjoint", n_items=50, n_users=300, seed=2, step=3, user_ids=[f"d{k}" for k in range(300)])
    return root


def _log(path):
    return [json.loads(line) for line in (path / "training_log.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------ the losses
def test_adversarial_losses_hand_computed_and_each_reaches_only_its_own_side():
    disc = nn.Linear(2, 2)
    with torch.no_grad():
        disc.weight.copy_(torch.eye(2))
        disc.bias.zero_()
    gur = torch.tensor([[2.0, 0.0], [0.0, 1.0]], requires_grad=True)  # logits = the GURs themselves
    domains = torch.tensor([0, 1])
    d = discriminator_loss(disc, gur, domains)
    assert d.item() == pytest.approx((math.log1p(math.exp(-2)) + math.log1p(math.exp(-1))) / 2, rel=1e-6)
    d.backward()
    assert gur.grad is None and disc.weight.grad.abs().sum() > 0  # trains the discriminator only
    disc.zero_grad()
    # confusion: cross-entropy against (1/2, 1/2): row (2, 0) -> log(1 + e^-2) + 1; row (0, 1) -> log(1 + e) - 1/2
    c = confusion_loss(disc, gur, 2)
    assert c.item() == pytest.approx((math.log1p(math.exp(-2)) + 1 + math.log1p(math.e) - 0.5) / 2, rel=1e-6)
    c.backward()
    assert disc.weight.grad is None and gur.grad.abs().sum() > 0  # trains the encoder side only
    # three domains: uniform over all three = mean over rows of logsumexp(l) - mean(l)
    three = nn.Linear(2, 3)
    logits = three(gur).detach()
    expected = (torch.logsumexp(logits, 1) - logits.mean(1)).mean()
    assert confusion_loss(three, gur, 3).item() == pytest.approx(expected.item(), rel=1e-6)
    assert overlap_loss(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]])).item() == pytest.approx(2.5)


def _probe(x: torch.Tensor, y: torch.Tensor) -> float:
    """Held-out accuracy of a fresh logistic probe telling the domains apart (0.5 = confused)."""
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, test = perm[: len(x) // 2], perm[len(x) // 2 :]
    probe = nn.Linear(x.shape[1], 2)
    opt = torch.optim.Adam(probe.parameters(), lr=0.02)
    for _ in range(300):
        opt.zero_grad()
        F.cross_entropy(probe(x[train]), y[train]).backward()
        opt.step()
    return (probe(x[test]).argmax(1) == y[test]).float().mean().item()


def _toy_game(encoder_loss: str, seed: int, n: int = 256, steps: int = 400) -> float:
    """Two domains whose inputs differ by an offset v; a shared linear encoder must keep everything but v
    (its task: u's projection orthogonal to v equals the input's); the discriminator and the encoder's
    adversarial loss are trained in one optimizer step, as in RecGURUTask. Returns the probe accuracy."""
    torch.manual_seed(seed)
    v = torch.randn(8)
    keep = torch.eye(8) - torch.outer(v, v) / v.dot(v)
    y = torch.arange(2).repeat_interleave(n)
    x = torch.randn(2 * n, 8) + torch.where(y[:, None] == 0, v, -v)
    encoder, disc = nn.Linear(8, 8), nn.Linear(8, 2)
    opt = torch.optim.Adam([*encoder.parameters(), *disc.parameters()], lr=3e-3)
    for _ in range(steps):
        u = encoder(x)
        loss = F.mse_loss(u @ keep, x @ keep) + discriminator_loss(disc, u, y)
        if encoder_loss == "confusion":
            loss = loss + confusion_loss(disc, u, 2)
        elif encoder_loss == "flipped":  # the paper's generator loss: the other domain's label
            frozen = {k: p.detach() for k, p in disc.named_parameters()}
            loss = loss + F.cross_entropy(torch.func.functional_call(disc, frozen, (u,)), 1 - y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return _probe(encoder(x).detach(), y)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_encoders_adversarial_updates_lead_to_domain_confusion_on_a_toy(seed):
    assert _toy_game("none", seed) > 0.9  # the task alone leaves the domains apart
    assert _toy_game("confusion", seed) < 0.65  # the adversarial updates merge them
    assert _toy_game("flipped", seed) > 0.85  # the flipped label, in one step: the domains swap, stay apart


def test_confusion_moves_the_real_encoders_grus_to_a_fixed_discriminators_boundary():
    """The real GURU encoder and two domain ID tables: a discriminator trained to tell the domains
    apart, then frozen; a few encoder updates on the confusion loss alone make it unsure."""
    torch.manual_seed(0)
    cfg = EncoderConfig(hidden_size=8, inner_size=8, n_layers=1, n_heads=1, hidden_dropout=0.0, attn_dropout=0.0, max_seq_length=6)
    encoder = SequenceEncoder(cfg)
    tables = [nn.Parameter(torch.randn(11, 8) + shift) for shift in (torch.ones(8), -torch.ones(8) * torch.arange(8) / 4)]
    rng = np.random.default_rng(0)
    seqs, lens = rng.integers(1, 11, size=(64, 5)), np.full(64, 5)
    y = torch.arange(2).repeat_interleave(64)

    def grus():
        return torch.cat([generalized_user_representation(encoder, t, seqs, lens, "cpu") for t in tables])

    disc = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    opt_d = torch.optim.Adam(disc.parameters(), lr=0.01)
    for _ in range(200):
        opt_d.zero_grad()
        discriminator_loss(disc, grus(), y).backward()
        opt_d.step()
    opt_d.zero_grad()

    def own_domain_probability():
        with torch.no_grad():
            return disc(grus()).softmax(1)[torch.arange(128), y].mean().item()

    before = own_domain_probability()
    opt_e = torch.optim.Adam([*encoder.parameters(), *tables], lr=0.01)
    for _ in range(60):
        opt_e.zero_grad()
        confusion_loss(disc, grus(), 2).backward()
        opt_e.step()
    assert all(p.grad is None for p in disc.parameters())  # the discriminator never moved
    assert before > 0.95 and abs(own_domain_probability() - 0.5) < 0.1


def test_reconstruction_is_teacher_forced_from_the_gur_with_a_sampled_softmax():
    torch.manual_seed(0)
    cfg = EncoderConfig(hidden_size=8, inner_size=8, n_layers=1, n_heads=1, hidden_dropout=0.0, attn_dropout=0.0, max_seq_length=6)
    decoder = SequenceEncoder(cfg).eval()
    table = torch.randn(11, 8)
    seqs = np.array([[3, 4, 5, 0, 0], [7, 1, 2, 9, 10], [2, 2, 0, 0, 0]])
    lens = np.array([3, 5, 2])
    gur = torch.randn(3, 8)
    negatives = np.array([4, 6, 9])
    got = reconstruction_loss(decoder, table, gur, seqs, lens, negatives)
    terms = []
    for i in range(3):  # by hand: input (u, x_1, ..., x_{n-1}), output t predicts x_t
        n = lens[i]
        inputs = torch.cat([gur[i : i + 1], table[torch.from_numpy(seqs[i, : n - 1])]])[None]
        out = decoder.forward_all(inputs, torch.tensor([n]))[0]
        for t in range(n):
            pos = seqs[i, t]
            cand = [pos] + [k for k in negatives if k != pos]  # a negative equal to the positive is removed
            logits = out[t] @ table[torch.tensor(cand)].T
            terms.append(-torch.log_softmax(logits, 0)[0])
    assert got.item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-5)


# ------------------------------------------------------------------------------ overlap path
def test_the_cdsrec_decoder_attends_to_each_prefixs_gur_and_never_to_the_future():
    from unisrec.models.encoder import attention
    from unisrec.models.recguru import GURAttention

    torch.manual_seed(0)
    enc = EncoderConfig(hidden_size=16, inner_size=16, n_heads=2, hidden_dropout=0.0, attn_dropout=0.0, max_seq_length=8)
    model = RecGURU(RecGURUConfig(num_items=30, encoder=enc)).eval()
    seqs = torch.tensor([[3, 4, 5, 6, 7, 8, 9], [7, 1, 2, 9, 10, 0, 0], [2, 2, 5, 0, 0, 0, 0]])
    lens = torch.tensor([7, 5, 3])
    table = model.item_embedding.weight
    every = model.position_representations(seqs, lens, table)
    # last-item batching and evaluation read the same function at the last position
    assert torch.allclose(model.sequence_representation(seqs, lens), every[torch.arange(3), lens - 1], atol=1e-6)
    # by hand: the GURU encoder's causal outputs are the GURs the decoder's positions attend to
    gur = model.encoder.forward_all(table[seqs], lens)
    assert torch.allclose(every, model.recommender(table[seqs], lens, gur), atol=1e-6)
    # output j never sees items after j (through its own attention or through the GUR)
    changed = seqs.clone()
    changed[0, 4] = 20
    after = model.position_representations(changed, lens, table)
    assert torch.equal(after[0, :4], every[0, :4]) and not torch.allclose(after[0, 4:], every[0, 4:])
    # the GUR attention is attention over a memory of the GUR repeated (the release's), computed directly
    layer = GURAttention(16, 0.0, 1e-12).eval()
    x, g = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    q = torch.randn(2, 1, 5, 16)
    memory_v = layer.value(g)[:, None, :, None, :].expand(2, 1, 5, 4, 16).reshape(2 * 5, 1, 4, 16)  # 4 copies per position
    keys = torch.randn(16)[None, None, None, :].expand(2 * 5, 1, 4, 16)  # identical keys
    ctx = attention(q.reshape(2 * 5, 1, 1, 16), keys, memory_v, torch.ones(1, 1, 1, 4, dtype=torch.bool)).reshape(2, 5, 16)
    assert torch.allclose(layer(x, g), layer.norm(layer.dense(ctx) + x), atol=1e-5)
    # the control without the unit scores the GUR itself: SASRec's shape
    control = RecGURU(RecGURUConfig(num_items=30, cdsrec=False, encoder=enc)).eval()
    assert not hasattr(control, "recommender")
    assert torch.allclose(control.position_representations(seqs, lens, control.item_embedding.weight),
                          control.encoder.forward_all(control.item_embedding.weight[seqs], lens))


def test_overlapping_users_are_linked_by_raw_id_and_feed_the_overlap_loss(shop, tmp_path, capsys):
    from unisrec.cli import main

    target, overlap, disjoint = (Dataset.load(shop / n) for n in ("target", "overlap", "disjoint"))
    rows_t, rows_o = DomainSequences.of(target, 50), DomainSequences.of(overlap, 50)
    pairs = link_users(target, rows_t, overlap, rows_o)
    assert len(pairs) == 100
    assert all(target.user_ids[rows_t.users[a]] == overlap.user_ids[rows_o.users[b]] for a, b in pairs)
    assert len(link_users(target, rows_t, disjoint, DomainSequences.of(disjoint, 50))) == 0
    runs = {}
    for name, source, extra in (("linked", "overlap", []), ("off", "overlap", ["--link-users", "false"]), ("none", "disjoint", [])):
        out = tmp_path / name
        assert main(["train", "recguru", str(shop / "target"), "--source", str(shop / source), "--output", str(out),
                     "--epochs", "1", *SMALL, *extra]) == 0
        runs[name] = (_log(out)[0], capsys.readouterr().out)
    log, said = runs["linked"]
    assert log["overlap"] > 0 and "overlapping users: 100 with overlap" in said
    assert set(RecGURUTaskNames) <= set(log)
    assert runs["off"][0]["overlap"] == 0 and "overlapping users: 0 with overlap" in runs["off"][1]
    assert runs["none"][0]["overlap"] == 0 and "overlapping users: 0 with disjoint" in runs["none"][1]


RecGURUTaskNames = ("next_item", "reconstruction", "discriminator", "confusion", "overlap", "domain_accuracy")


# ------------------------------------------------------------------------------ end to end
def test_trains_with_a_source_beyond_popularity_evaluates_and_resumes_exactly(shop, tmp_path, capsys):
    from unisrec.cli import main
    from unisrec.models.popularity import evaluate_popularity

    out = tmp_path / "rg"
    args = ["train", "recguru", str(shop / "target"), "--source", str(shop / "overlap"), *SMALL]
    assert main([*args, "--output", str(out), "--epochs", "8"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    pop = evaluate_popularity(Dataset.load(shop / "target"))
    assert metrics["test"]["recall@10"] > pop["recall@10"] + 0.25 and metrics["test"]["ndcg@10"] > 2 * pop["ndcg@10"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "recguru" and cfg["training"]["source"] == [str(shop / "overlap")]
    # the model directory holds the target recommender alone (ID table, GURU encoder, CDSRec decoder): no source
    # table, autoencoder decoder or discriminator
    weights = load_file(str(out / "model.safetensors"))
    assert all(k.startswith(("item_embedding.", "encoder.", "recommender.")) for k in weights)
    assert any(k.startswith("recommender.layers.1.gur_attention.") for k in weights)
    assert weights["item_embedding.weight"].shape[0] == 41
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == metrics["test"]
    # a directory from before the CDSRec unit (no `cdsrec` recorded, no decoder weights) loads as the GUR-scored model
    old = tmp_path / "before_cdsrec"
    old.mkdir()
    cfg_old = json.loads((out / "config.json").read_text())
    del cfg_old["model"]["cdsrec"]
    (old / "config.json").write_text(json.dumps(cfg_old))
    save_file({k: v for k, v in weights.items() if not k.startswith("recommender.")}, str(old / "model.safetensors"))
    loaded = RecGURU.from_pretrained(old)
    assert loaded.config.cdsrec is False and not hasattr(loaded, "recommender")
    # exact resume: 1 epoch, then --resume to 2, logs the same second epoch as 2 epochs straight
    a, b = tmp_path / "a", tmp_path / "b"
    assert main([*args, "--output", str(a), "--epochs", "2"]) == 0
    assert main([*args, "--output", str(b), "--epochs", "1"]) == 0
    assert main([*args, "--output", str(b), "--epochs", "2", "--resume"]) == 0
    second = [_log(p)[1] for p in (a, b)]
    for key in ("loss", *RecGURUTaskNames):
        assert second[0][key] == second[1][key], key
    assert second[0]["valid"] == second[1]["valid"]


def test_source_flags_and_their_errors(shop, tmp_path):
    from unisrec.cli import main
    from unisrec.config import load_configs
    from unisrec.training.config import TrainConfig
    from unisrec.training.supervised import train_model

    train, _ = load_configs((TrainConfig, RecGURUConfig), None, {"source": ["a,b", "c"]})
    assert train.source == ["a,b", "c"]  # a repeated flag: each value one path, commas kept
    yaml = tmp_path / "c.yaml"
    yaml.write_text("source: games\n")
    assert load_configs((TrainConfig,), yaml)[0].source == ["games"]
    with pytest.raises(UserError, match="twice"):
        TrainConfig(source=["a", "a"])
    tiny = TrainConfig(epochs=1, progress=False, threads=1)
    with pytest.raises(UserError, match="trains on source domains and the target together"):
        train_model("recguru", shop / "target", tmp_path / "x", tiny, RecGURUConfig())
    with pytest.raises(UserError, match="sasrec trains on its target only"):
        train_model("sasrec", shop / "target", tmp_path / "y", TrainConfig(epochs=1, source=[str(shop / "overlap")]))
    with pytest.raises(UserError, match="the target dataset itself"):
        train_model("recguru", shop / "target", tmp_path / "z", TrainConfig(epochs=1, source=[str(shop / "target")]))
    assert main(["train", "recguru", str(shop / "target"), "--source", str(tmp_path / "nowhere"), "--output", str(tmp_path / "w")]) == 2
    assert not (tmp_path / "w").exists()
    with pytest.raises(UserError, match="--source"):  # finetune trains on its target only
        from unisrec.training.supervised import fit

        fit(RecGURU.for_dataset(RecGURUConfig(), 40), Dataset.load(shop / "target"), TrainConfig(source=["x"]), tmp_path / "v")


def test_a_benchmark_cell_with_source_trains_with_it(shop, tmp_path, monkeypatch):
    from unisrec.benchmark import runner
    from unisrec.benchmark.spec import spec_from_dict

    monkeypatch.setenv("UNISREC_DATA", str(shop))
    monkeypatch.chdir(tmp_path)
    options = {"epochs": 1, "batch_size": 128, "hidden_size": 16, "inner_size": 16, "domain_batch_size": 32, "device": "cpu"}
    spec = spec_from_dict({"datasets": {"target": "target"}, "seeds": [1], "options": options,
                           "models": {"RecGURU": {"model": "recguru", "source": ["overlap", "disjoint"]},
                                      "Lost": {"model": "recguru", "source": "nowhere"}}})
    cell = spec.models["RecGURU"]
    assert cell.paper == "recguru" and cell.role == "baseline" and [s.path for s in cell.sources] == [shop / "overlap", shop / "disjoint"]
    assert spec.to_dict()["models"]["RecGURU"]["source"] == ["overlap", "disjoint"]
    summary = runner.run_benchmark(spec, tmp_path / "runs", threads=1, isolate=False, say=lambda s: None)
    done, lost = summary["cells"]
    assert done["status"] == "finished", done
    assert "--source $UNISREC_DATA/overlap --source $UNISREC_DATA/disjoint" in done["command"]
    assert json.loads((tmp_path / "runs/target/RecGURU/seed1/config.json").read_text())["training"]["source"] == [
        str(shop / "overlap"), str(shop / "disjoint")]
    assert lost["status"] == "unavailable" and "nowhere" in lost["message"]
    # the worker process rebuilds the entry with its sources
    assert runner._entry_dict(cell)["sources"][0][:3] == ["overlap", str(shop / "overlap"), "overlap"]
