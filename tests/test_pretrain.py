"""Pre-training end to end on small generated domains: CLI, checkpoint layout, resume, logs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from unisrec.data.dataset import Dataset, write_json
from unisrec.training.state import current_generation, read_run_state


def make_domain(path: Path, name: str, n_items: int = 60, n_users: int = 80, dim: int = 16, seed: int = 0) -> Path:
    """A real dataset directory with clean + word-drop features: items sit in 6 clusters and each
    user walks inside one cluster, so next items are learnable from text features."""
    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, 6, n_items)
    centers = rng.normal(size=(6, dim))
    feats = np.zeros((n_items + 1, dim), np.float32)
    feats[1:] = centers[cluster] + 0.3 * rng.normal(size=(n_items, dim))
    aug = feats.copy()
    aug[1:] += 0.1 * rng.normal(size=(n_items, dim))
    seqs = []
    for _ in range(n_users):
        c = rng.integers(0, 6)
        pool = np.nonzero(cluster == c)[0] + 1
        if len(pool) == 0:
            pool = np.arange(1, n_items + 1)
        seqs.append(rng.choice(pool, size=int(rng.integers(4, 12))))
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
    ds = Dataset(
        name=name,
        item_ids=[f"{name}-i{i}" for i in range(n_items)],
        item_texts=[f"item {i}" for i in range(n_items)],
        user_ids=[f"u{u}" for u in range(n_users)],
        seq_offsets=offsets,
        seq_items=np.concatenate(seqs).astype(np.int32),
        manifest={"source": "generated"},
    )
    ds.save(path)
    (path / "features").mkdir()
    np.save(path / "features/toy.npy", feats)
    np.save(path / "features/toy.aug.npy", aug)
    ds.update_manifest(
        features={"toy": {"file": "features/toy.npy", "augmented_file": "features/toy.aug.npy", "dim": dim, "encoder": "toy"}},
        default_features="toy",
    )
    return path


@pytest.fixture(scope="module")
def domains(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("domains")
    return [make_domain(root / "a", "a", seed=1), make_domain(root / "b", "b", n_items=40, seed=2)]


SMALL = dict(hidden_size=32, inner_size=32, n_heads=2, n_experts=4)


def small_model(**kw):
    from unisrec.models.checkpoint import config_from_dict
    from unisrec.models.unisrec import UniSRecConfig

    return config_from_dict(UniSRecConfig, {**SMALL, **kw})


def test_cli_writes_a_checkpoint_finetune_can_load(domains, tmp_path):
    from unisrec.cli import main
    from unisrec.models.unisrec import UniSRec

    out = tmp_path / "ckpt"
    rc = main(["pretrain", *map(str, domains), "--output", str(out), "--epochs", "2", "--batch-size", "364", "--no-progress"])
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "unisrec" and cfg["model"]["mode"] == "inductive"
    assert [d["offset"] for d in cfg["pretraining"]["domains"]] == [0, 60]
    log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    for r in log:
        assert r["loss"] > 0 and r["loss_si"] > 0 and r["loss_ss"] > 0 and r["sequences_per_s"] > 0 and r["seconds"] > 0
        assert abs(r["loss"] - (r["loss_si"] + 1e-3 * r["loss_ss"])) < 1e-6
    model = UniSRec.from_pretrained(out, mode="transductive", num_items=5)
    assert model.item_id_embedding is not None
    assert (current_generation(out) / "optimizer.safetensors").is_file()


def test_cli_reports_user_errors(domains, tmp_path, capsys):
    from unisrec.cli import main

    assert main(["pretrain", str(tmp_path / "missing"), "--output", str(tmp_path / "o")]) == 2
    assert "not a unisrec dataset" in capsys.readouterr().err
    assert main(["pretrain", str(domains[0]), "--output", str(tmp_path / "o"), "--resume"]) == 2
    assert "no pre-training checkpoint" in capsys.readouterr().err


def test_pretraining_lowers_the_loss(domains, tmp_path):
    from unisrec.training.pretrain import PretrainConfig, pretrain

    cfg = PretrainConfig(epochs=4, batch_size=128, lr=3e-3, save_every=0)
    _, summary = pretrain(domains, tmp_path / "o", cfg, small_model(), show_progress=False)
    losses = [e["loss_si"] for e in summary["epochs"]]
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.parametrize("stop_at", [3, 12])  # mid-epoch and exactly at the end of epoch 1 (12 steps)
def test_resume_gives_identical_next_step_loss(domains, tmp_path, stop_at):
    from unisrec.training.pretrain import PretrainConfig, pretrain

    straight = PretrainConfig(epochs=3, max_steps=stop_at + 1, batch_size=64)
    _, ref = pretrain(domains, tmp_path / "straight", straight, small_model(), show_progress=False)
    first = PretrainConfig(epochs=3, max_steps=stop_at, batch_size=64)
    pretrain(domains, tmp_path / "resumed", first, small_model(), show_progress=False)
    assert read_run_state(tmp_path / "resumed").global_step == stop_at
    again = PretrainConfig(epochs=3, max_steps=stop_at + 1, batch_size=64, resume=True)
    _, got = pretrain(domains, tmp_path / "resumed", again, None, show_progress=False)
    assert got["global_step"] == ref["global_step"] == stop_at + 1
    assert got["last_loss"] == ref["last_loss"]  # same weights, optimizer moments, data, RNG


def test_init_from_starts_at_the_given_weights(domains, tmp_path):
    import torch
    from safetensors.torch import load_file

    from unisrec.training.pretrain import PretrainConfig, pretrain

    pretrain(domains[:1], tmp_path / "first", PretrainConfig(max_steps=2, batch_size=64), small_model(), show_progress=False)
    cont = PretrainConfig(max_steps=1, batch_size=64, lr=0.0, init_from=str(tmp_path / "first"))
    model, _ = pretrain(domains, tmp_path / "second", cont, None, show_progress=False)  # architecture from "first"
    first = load_file(str(tmp_path / "first" / "model.safetensors"))
    assert model.config.encoder.hidden_size == SMALL["hidden_size"]
    for k, v in model.state_dict().items():
        if k != "item_features":
            assert torch.equal(v, first[k]), k


def test_unique_items_matches_torch_unique():
    import torch

    from unisrec.training.pretrain import unique_items

    items = torch.randint(0, 500, (3000,))
    u, inv = unique_items(items, 1000)
    ref_u, ref_inv = torch.unique(items, return_inverse=True)
    assert torch.equal(u, ref_u) and torch.equal(inv, ref_inv)


def test_length_chunked_encoding_equals_one_padded_call():
    import torch

    from unisrec.models.unisrec import UniSRec
    from unisrec.training.pretrain import encode_by_length

    torch.manual_seed(0)
    model = UniSRec(small_model(text_dim=8, hidden_dropout=0.0, attn_dropout=0.0)).eval()
    table = torch.randn(30, 32)
    lengths = torch.randint(1, 51, (300,))
    seqs = torch.randint(1, 30, (300, 50)) * (torch.arange(50)[None, :] < lengths[:, None])
    full = model.sequence_representation(seqs, lengths, table)
    chunked = encode_by_length(model, seqs, lengths, table)
    assert torch.allclose(full, chunked, atol=1e-5)


def test_time_limit_stops_and_checkpoints(domains, tmp_path):
    from unisrec.training.pretrain import PretrainConfig, pretrain

    cfg = PretrainConfig(epochs=50, batch_size=64, time_limit_minutes=1e-4)
    _, summary = pretrain(domains, tmp_path / "o", cfg, small_model(), show_progress=False)
    state = read_run_state(tmp_path / "o")
    assert 1 <= summary["global_step"] < 12 and state.global_step == summary["global_step"]
    assert summary["epochs"][-1]["partial"]


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("read", ["last position", "chosen positions"])
def test_the_final_layer_at_read_positions_equals_every_positions_outputs_there_with_gradients(causal, read):
    """forward_last (training and pre-training read the last real item) and forward_at (BERT4Rec's
    Cloze reads the masked positions) compute the final layer there only: the same values and gradients."""
    import torch

    from unisrec.models.unisrec import UniSRec

    torch.manual_seed(0)
    model = UniSRec(small_model(text_dim=8, hidden_dropout=0.0, attn_dropout=0.0)).train()
    table = torch.randn(30, 32)
    lengths = torch.randint(1, 21, (64,))
    lengths[0] = 1
    seqs = torch.randint(1, 30, (64, 20)) * (torch.arange(20)[None, :] < lengths[:, None])
    everywhere = model.encoder.forward_all(table[seqs], lengths, causal)  # every layer at every position
    if read == "last position":
        ref = everywhere[torch.arange(len(seqs)), lengths - 1]
        got = model.encoder.forward_last(table[seqs], lengths, causal)
    else:
        positions = (torch.rand(64, 5) * lengths[:, None]).long()  # any real positions, repeats allowed
        ref = torch.gather(everywhere, 1, positions[:, :, None].expand(64, 5, everywhere.shape[-1]))
        got = model.encoder.forward_at(table[seqs], lengths, positions, causal)
    assert torch.allclose(ref, got, atol=1e-5)
    params = list(model.encoder.parameters())
    for a, b in zip(torch.autograd.grad(ref.square().sum(), params, allow_unused=True),
                    torch.autograd.grad(got.square().sum(), params, allow_unused=True)):
        assert (a is None and b is None) or torch.allclose(a, b, atol=1e-4)


def test_multidomain_offsets_feature_rows_and_word_drop_rows(domains, tmp_path):
    from unisrec.data.dataset import DatasetError
    from unisrec.data.multidomain import MultiDomainCorpus

    a, b = Dataset.load(domains[0]), Dataset.load(domains[1])
    corpus = MultiDomainCorpus([a, b])
    T = a.num_items + b.num_items
    assert corpus.num_items == T and corpus.feature_table.shape == (1 + 2 * T, 16)
    assert not corpus.feature_table[0].any()
    assert np.array_equal(corpus.feature_table[1 + a.num_items : 1 + T], np.asarray(b.features())[1:])
    assert np.array_equal(corpus.feature_table[T + a.num_items + 1 :], np.asarray(b.features(augmented=True))[1:])
    n_a = len(a.examples("train")[2])
    h, l, t = b.examples("train")
    assert np.array_equal(corpus.targets[n_a:], t + a.num_items)
    assert np.array_equal(corpus.history[n_a:], np.where(h > 0, h + a.num_items, 0))
    # a word-dropped item of domain b points at its own feat2 row
    batch = corpus.batch(np.arange(n_a, len(corpus)), np.random.default_rng(0), item_drop_prob=0.0, drop_prob=1.0)
    real = batch["history"] > 0
    assert np.array_equal(batch["aug_history"][real], batch["history"][real] + T)
    # domains encoded with different encoders are refused
    c = make_domain(tmp_path / "c", "c", dim=8, seed=3)
    with pytest.raises(DatasetError, match="dim"):
        MultiDomainCorpus([a, Dataset.load(c)])


def test_cli_model_flags_reach_the_pretrained_architecture(domains, tmp_path):
    from unisrec.cli import main

    out = tmp_path / "o"
    args = ["pretrain", *map(str, domains), "--output", str(out), "--max-steps", "1", "--batch-size", "64",
            "--hidden-size", "16", "--inner-size", "16", "--n-experts", "2", "--whitening", "false", "--temperature", "0.1",
            "--no-progress"]
    assert main(args) == 0
    model = json.loads((out / "config.json").read_text())["model"]
    assert model["encoder"]["hidden_size"] == 16 and model["n_experts"] == 2 and model["whitening"] is False
    assert model["temperature"] == 0.1 and model["mode"] == "inductive"
    assert json.loads((out / "config.json").read_text())["pretraining"]["config"]["temperature"] == 0.1
