"""CCDR: the contrastive losses on hand-computed examples, the neighbourhood augmentation, the text
neighbours, the overlap path on generated data with overlapping users, and `unisrec train ccdr TARGET
--source DIR` end to end (beyond popularity, evaluate)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from unisrec.data.dataset import Dataset
from unisrec.errors import UserError
from unisrec.models.ccdr import (
    CCDR,
    CCDRConfig,
    info_nce,
    intra_domain_loss,
    nearest_text_neighbours,
    neighbour_inter_domain_loss,
    neighbour_sampling,
    text_neighbour_inter_domain_loss,
    user_inter_domain_loss,
)
from unisrec.training.config import TrainConfig
from test_recguru import make_domain

SMALL = ["--hidden-size", "16", "--inner-size", "16", "--batch-size", "128", "--lr", "0.005", "--domain-batch-size", "64",
         "--progress", "false", "--threads", "1"]
LOSSES = ("next_item", "source_next_item", "intra", "inter_user", "inter_neighbour", "inter_text")


def add_text(path, vectors, name="vec", encoder="test-encoder"):
    """A feature set of the given (num_items, dim) vectors (row 0 = padding added)."""
    ds = Dataset.load(path)
    (path / "features").mkdir(exist_ok=True)
    table = np.vstack([np.zeros((1, vectors.shape[1])), vectors]).astype(np.float32)
    np.save(path / "features" / f"{name}.npy", table)
    ds.update_manifest(features={name: {"file": f"features/{name}.npy", "dim": int(table.shape[1]), "encoder": encoder}},
                       default_features=name)


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A target (40 items), a source sharing 100 of its user ids, a source sharing none; text vectors
    such that target item k's nearest item in "overlap" is item 2k (one-hot directions, a little noise)."""
    root = tmp_path_factory.mktemp("domains")
    make_domain(root / "target", seed=0)
    make_domain(root / "overlap", n_items=80, n_users=300, seed=1, step=2,
                user_ids=[f"u{k}" for k in range(100)] + [f"s{k}" for k in range(200)])
    make_domain(root / "disjoint", n_items=50, n_users=300, seed=2, step=3, user_ids=[f"d{k}" for k in range(300)])
    rng = np.random.default_rng(0)
    add_text(root / "target", np.eye(40) + 0.01 * rng.random((40, 40)))
    source = 0.01 * rng.random((80, 40))
    source[np.arange(1, 80, 2), np.arange(40)] = 1.0  # source item 2k (row 2k - 1) points where target item k does
    add_text(root / "overlap", source)
    add_text(root / "disjoint", rng.random((50, 40)))
    return root


def _log(path):
    return [json.loads(line) for line in (path / "training_log.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------ the losses
def test_info_nce_hand_computed():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[2.0, 0.0], [1.0, 1.0]])  # cosines: q0.k0 = 1, q0.k1 = 1/sqrt2, q1.k0 = 0, q1.k1 = 1/sqrt2
    tau, r = 0.5, 1 / math.sqrt(2)
    row0 = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + math.exp(r / tau)))
    row1 = -math.log(math.exp(r / tau) / (math.exp(0) + math.exp(r / tau)))
    assert info_nce(q, k, tau).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    # the named losses are this form on their own pairs
    assert intra_domain_loss(q, k, tau).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    assert user_inter_domain_loss(q, k, tau).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    # a key that is the same entity as the positive leaves the denominator (never the positive itself)
    same = torch.tensor([[True, True], [True, True]])
    assert info_nce(q, k, tau, same).item() == pytest.approx(0.0, abs=1e-7)
    items = torch.tensor([5, 5])  # one source neighbour drawn for both users: no negative is left
    assert neighbour_inter_domain_loss(q, k, items, tau).item() == pytest.approx(0.0, abs=1e-7)
    assert text_neighbour_inter_domain_loss(q, k, torch.tensor([3, 4]), tau).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    # three rows, temperature 1, by hand
    q3 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    k3 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    cos = q3 @ k3.T
    expected = -(cos.diagonal() - torch.logsumexp(cos, 1)).mean()
    assert info_nce(q3, k3, 1.0).item() == pytest.approx(expected.item(), rel=1e-6)


def test_neighbour_sampling_keeps_a_time_ordered_subset_of_each_users_items():
    rng = np.random.default_rng(0)
    lens = rng.integers(1, 9, size=300)
    seqs = np.where(np.arange(8)[None, :] < lens[:, None], rng.integers(1, 100, size=(300, 8)), 0)
    views, n = neighbour_sampling(seqs, lens, 0.8, np.random.default_rng(1))
    assert (n >= 1).all() and (n <= lens).all()
    assert abs(n.sum() / lens.sum() - 0.8) < 0.05
    for row in range(300):
        kept = list(views[row, : n[row]])
        assert (views[row, n[row] :] == 0).all()
        it = iter(seqs[row, : lens[row]])
        assert all(any(x == y for y in it) for x in kept)  # a subsequence: order kept
    same, n1 = neighbour_sampling(seqs, lens, 1.0, np.random.default_rng(2))
    assert (n1 == lens).all() and (same == seqs[:, : same.shape[1]]).all()


def test_nearest_text_neighbours_by_cosine():
    target = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], np.float32)  # row 0 = padding
    source = np.array([[0, 0], [0, 5], [3, 0.1], [1, 1.2]], np.float32)
    assert list(nearest_text_neighbours(target, source, chunk=2)) == [0, 2, 1, 3]


def test_text_neighbours_are_computed_and_checked(shop, tmp_path):
    from unisrec.training.supervised import train_model

    target, overlap = Dataset.load(shop / "target"), Dataset.load(shop / "overlap")
    model = CCDR.for_dataset(CCDRConfig(), target.num_items)
    task = model.joint_task(target, [overlap], TrainConfig(), torch.device("cpu"))
    assert list(task.neighbours[0][1:]) == [2 * k for k in range(1, 41)]
    other = tmp_path / "other"
    make_domain(other, n_items=30, seed=5)
    tiny = TrainConfig(epochs=1, progress=False, threads=1, source=[str(other)])
    with pytest.raises(UserError, match=r"ccdr: dataset .*other has no text features.*--text-neighbours false"):
        train_model("ccdr", shop / "target", tmp_path / "x", tiny, CCDRConfig())
    add_text(other, np.random.default_rng(0).random((30, 40)), encoder="another-encoder")
    with pytest.raises(UserError, match="different encoders"):
        train_model("ccdr", shop / "target", tmp_path / "y", tiny, CCDRConfig())
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


# ------------------------------------------------------------------------------ overlap path
def test_overlapping_users_feed_the_user_and_neighbour_losses(shop, tmp_path, capsys):
    from unisrec.cli import main

    runs = {}
    for name, source, extra in (("linked", "overlap", []), ("off", "overlap", ["--link-users", "false"]), ("none", "disjoint", [])):
        out = tmp_path / name
        assert main(["train", "ccdr", str(shop / "target"), "--source", str(shop / source), "--output", str(out),
                     "--epochs", "1", *SMALL, *extra]) == 0
        runs[name] = (_log(out)[0], capsys.readouterr().out)
    log, said = runs["linked"]
    assert set(LOSSES) <= set(log) and all(log[k] > 0 for k in LOSSES)
    assert "overlapping users: 100 with overlap" in said
    for name, source in (("off", "overlap"), ("none", "disjoint")):
        log, said = runs[name]
        assert log["inter_user"] == 0 and log["inter_neighbour"] == 0 and log["inter_text"] > 0 and log["intra"] > 0
        assert f"overlapping users: 0 with {source}" in said


# ------------------------------------------------------------------------------ end to end
def test_trains_with_sources_beyond_popularity_and_evaluates(shop, tmp_path, capsys):
    from unisrec.cli import main
    from unisrec.models.popularity import evaluate_popularity

    out = tmp_path / "ccdr"
    assert main(["train", "ccdr", str(shop / "target"), "--source", str(shop / "overlap"), "--source", str(shop / "disjoint"),
                 "--output", str(out), "--epochs", "6", *SMALL]) == 0
    said = capsys.readouterr().out
    assert "sources overlap (300 users, 80 items), disjoint (300 users, 50 items)" in said
    metrics = json.loads((out / "metrics.json").read_text())
    pop = evaluate_popularity(Dataset.load(shop / "target"))
    assert metrics["test"]["recall@10"] > pop["recall@10"] + 0.25 and metrics["test"]["ndcg@10"] > 2 * pop["ndcg@10"]
    assert all(k.startswith(("item_embedding.", "encoder.")) for k in load_file(str(out / "model.safetensors")))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "ccdr" and cfg["dataset"]["features"] is None  # an ID model: no text in its directory
    assert main(["evaluate", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == metrics["test"]
