"""Recommender API, new items, FAISS index and the serving CLI, on small real model directories."""

from __future__ import annotations

import json
import sys
import threading

import numpy as np
import pytest
import torch

from serving_fixtures import SCIENCE_TEXTS, make_model_dir, random_model_dir, text_encoder_class, text_model_dir, tiny_config
from unisrec.cli import main as cli_main
from unisrec.errors import UserError
from unisrec.models.model_dir import load_model
from unisrec.models.unisrec import UniSRec
from unisrec.serving.recommender import Recommender, UnknownItemsError

try:
    import faiss  # noqa: F401

    HAVE_FAISS = True
except ImportError:
    HAVE_FAISS = False
needs_faiss = pytest.mark.skipif(not HAVE_FAISS, reason="faiss not installed (pip install 'unisrec[faiss]')")
needs_encoder = pytest.mark.skipif(text_encoder_class() is None, reason="unisrec.text.TextEncoder not available yet")


@pytest.fixture(scope="module")
def inductive_dir(tmp_path_factory):
    return random_model_dir(tmp_path_factory.mktemp("ind"), n=60, mode="inductive")


@pytest.fixture(scope="module")
def transductive_dir(tmp_path_factory):
    return random_model_dir(tmp_path_factory.mktemp("trans"), n=60, mode="transductive", seed=1)


def model_topk(model_dir, history_idx, k):
    """Reference ranking: the model's own forward pass (Eq. 11/12 logits over the whole catalogue)."""
    model = load_model(model_dir).eval()
    with torch.no_grad():
        logits = model(torch.tensor([history_idx]), torch.tensor([len(history_idx)]))
    top = torch.topk(logits[0], k)
    return top.indices.tolist(), (top.values * model.config.temperature).tolist()


@pytest.mark.parametrize("which", ["inductive_dir", "transductive_dir"])
def test_recommend_matches_model_forward(which, request):
    model_dir = request.getfixturevalue(which)
    rec = Recommender.from_pretrained(model_dir)
    history = [3, 17, 5, 42]
    got = rec.recommend([f"item-{i}" for i in history], k=10)
    want_idx, want_scores = model_topk(model_dir, history, 10)
    assert [g["id"] for g in got] == [f"item-{i}" for i in want_idx]
    np.testing.assert_allclose([g["score"] for g in got], want_scores, rtol=1e-5, atol=1e-6)
    assert all(g["text"] == f"text of item {g['id'].split('-')[1]}" for g in got)


def test_known_ranking_from_controlled_table(tmp_path):
    """Identity adaptor, item i = scale_i * basis vector i: cosine ranking = order of s's coordinates,
    whatever the scales (a dot product instead of cosine would follow the scales)."""
    n = d = 32
    torch.manual_seed(0)
    cfg = tiny_config(text_dim=d, max_seq_length=8, hidden_size=d)
    cfg.n_experts = 1
    model = UniSRec(cfg)
    with torch.no_grad():
        model.adaptor.experts[0].linear.weight.copy_(torch.eye(d))
        model.adaptor.experts[0].bias.zero_()
    scales = np.geomspace(1, 1000, n).astype(np.float32)[np.random.default_rng(0).permutation(n)]
    feats = np.zeros((n + 1, d), np.float32)
    feats[1:] = np.eye(d, dtype=np.float32) * scales[:, None]
    ids = [f"x{i}" for i in range(1, n + 1)]
    model_dir = make_model_dir(tmp_path, ids, [f"t{i}" for i in ids], feats, model=model)
    rec = Recommender.from_pretrained(model_dir)
    _, table = rec.item_embeddings()
    np.testing.assert_allclose(table, feats[1:], atol=1e-5)  # v_i = x_i
    history = ["x4", "x9", "x1"]
    s = rec.embed_sequences([history])[0]
    want = np.argsort(-s, kind="stable")[:5]
    got = rec.recommend(history, k=5)
    assert [g["id"] for g in got] == [ids[j] for j in want]
    np.testing.assert_allclose([g["score"] for g in got], s[want] / np.linalg.norm(s), rtol=1e-5)


def test_batch_equals_single_and_truncation(inductive_dir):
    rec = Recommender.from_pretrained(inductive_dir)
    histories = [["item-1"], ["item-2", "item-3", "item-4"], [f"item-{i}" for i in range(1, 21)]]
    batch = rec.recommend_batch(histories, k=7)
    for h, b in zip(histories, batch):
        single = rec.recommend(h, k=7)
        assert [x["id"] for x in single] == [x["id"] for x in b]
        np.testing.assert_allclose([x["score"] for x in single], [x["score"] for x in b], rtol=1e-5, atol=1e-6)
    # max_seq_length is 8: a 20-item history is answered from its latest 8 items
    assert rec.max_history == 8
    assert rec.recommend(histories[2], k=7) == rec.recommend(histories[2][-8:], k=7)


def test_exclude_seen(inductive_dir):
    rec = Recommender.from_pretrained(inductive_dir)
    history = ["item-5", "item-6", "item-5", "item-30"]
    everything = rec.recommend(history, k=60)
    assert len(everything) == 60 and {"item-5", "item-6", "item-30"} <= {x["id"] for x in everything}
    kept = rec.recommend(history, k=60, exclude_seen=True)
    assert [x["id"] for x in kept] == [x["id"] for x in everything if x["id"] not in history]
    assert len(rec.recommend(history, k=10, exclude_seen=True)) == 10
    assert len(rec.recommend(history, k=500)) == 60  # k beyond the catalogue: everything, no padding


def test_unknown_ids_and_bad_input(inductive_dir):
    rec = Recommender.from_pretrained(inductive_dir)
    with pytest.raises(UnknownItemsError) as err:
        rec.recommend(["item-1", "nope", "item-2", "nada"])
    assert err.value.ids == ["nope", "nada"] and "'nope', 'nada'" in str(err.value)
    for bad, match in [([], "empty"), ("item-1", "not one string"), ([1], "not a string")]:
        with pytest.raises(UserError, match=match):
            rec.recommend(bad)
    with pytest.raises(UserError, match="k must be"):
        rec.recommend(["item-1"], k=0)
    with pytest.raises(UserError, match="non-empty"):
        rec.add_items({"z": "  "}, features=np.zeros((1, 16)))
    with pytest.raises(UserError, match="shape"):
        rec.add_items({"z": "text"}, features=np.zeros((1, 3)))


def test_add_items_twin_is_recommendable_and_usable_in_history(inductive_dir):
    rec = Recommender.from_pretrained(inductive_dir)
    feats = np.load(inductive_dir / "catalogue" / "features.npy")
    before = rec.recommend(["item-7", "item-8"], k=60)
    top = before[0]
    j = int(top["id"].split("-")[1])
    out = rec.add_items({"twin": "a copy of the top item"}, features=feats[j : j + 1])
    assert out == {"added": 1, "updated": 0, "num_items": 61}
    after = rec.recommend(["item-7", "item-8"], k=2)
    assert {x["id"] for x in after} == {top["id"], "twin"}
    assert after[0]["score"] == pytest.approx(after[1]["score"], abs=1e-6)
    # usable in a history: an inductive twin encodes exactly like the original
    np.testing.assert_allclose(rec.embed_sequences([["item-1", "twin"]]), rec.embed_sequences([["item-1", top["id"]]]), atol=1e-5)
    # re-texting an existing item replaces its vector (copy-on-write) without changing the count
    out = rec.add_items({"item-1": "new text"}, features=feats[j : j + 1])
    assert out == {"added": 0, "updated": 1, "num_items": 61}
    assert rec.recommend(["item-7", "item-8"], k=3)[2]["id"] == "item-1"
    assert rec._snap.texts[1] == "new text"


def test_transductive_new_items_are_text_only(transductive_dir):
    rec = Recommender.from_pretrained(transductive_dir)
    model = rec.model
    x = np.random.default_rng(5).normal(size=(2, 16)).astype(np.float32)
    rec.add_items({"cold-1": "a", "cold-2": "b"}, features=x)
    ids, table = rec.item_embeddings()
    with torch.no_grad():
        text_only = model.adaptor(torch.from_numpy(x)).numpy()
        known = load_model(transductive_dir).eval().item_representations(torch.tensor([3])).numpy()
    np.testing.assert_allclose(table[-2:], text_only, atol=1e-5)  # e_i = 0 for new items
    np.testing.assert_allclose(table[2], known[0], atol=1e-5)  # known items keep v_i + e_i
    assert ids[-2:] == ["cold-1", "cold-2"]
    assert any(r["id"] == "cold-1" for r in rec.recommend(["cold-1", "item-2"], k=62))


def test_concurrent_add_items_never_corrupts_answers(inductive_dir):
    """Readers racing a writer see, for every returned item, the exact score of some consistent
    catalogue: original items keep their scores, twins score exactly as their originals."""
    rec = Recommender.from_pretrained(inductive_dir)
    feats = np.load(inductive_dir / "catalogue" / "features.npy")
    history = ["item-11", "item-12"]
    reference = {x["id"]: x["score"] for x in rec.recommend(history, k=60)}
    errors: list[str] = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            got = rec.recommend(history, k=5)
            scores = [x["score"] for x in got]
            if len(got) != 5 or scores != sorted(scores, reverse=True):
                errors.append(f"bad list {got}")
            for x in got:
                base = x["id"].split("@")[0]
                if abs(x["score"] - reference[base]) > 1e-5:
                    errors.append(f"{x['id']} scored {x['score']} != {reference[base]}")

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    ranked = list(reference)
    for step in range(40):  # twins of the top items: answers change, but never inconsistently
        j = int(ranked[step % 5].split("-")[1])
        rec.add_items({f"item-{j}@{step}": "twin"}, features=feats[j : j + 1])
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert rec.num_items == 100


@needs_faiss
def test_faiss_matches_exact_and_handles_new_items(tmp_path):
    model_dir = random_model_dir(tmp_path, n=3000, text_dim=16)
    exact = Recommender.from_pretrained(model_dir)
    approx = Recommender.from_pretrained(model_dir, index="faiss", faiss_params="nprobe=54")  # all lists
    assert approx._snap.ann.spec == "IVF54,Flat"
    histories = [[f"item-{i}", f"item-{i + 7}"] for i in range(1, 200, 7)]
    for e, a in zip(exact.recommend_batch(histories, k=10), approx.recommend_batch(histories, k=10)):
        assert [x["id"] for x in e] == [x["id"] for x in a]
    default = Recommender.from_pretrained(model_dir, index="faiss")  # nprobe 8 of 54 lists
    hits = sum(
        len({x["id"] for x in e} & {x["id"] for x in a})
        for e, a in zip(exact.recommend_batch(histories, k=10), default.recommend_batch(histories, k=10))
    )
    assert hits / (10 * len(histories)) > 0.6
    h = ["item-3", "item-4"]
    assert all(x["id"] not in h for x in approx.recommend(h, k=10, exclude_seen=True))
    # new items: exact "fresh" rows first, merged into a cloned index past the threshold
    feats = np.load(model_dir / "catalogue" / "features.npy")
    top = exact.recommend(h, k=1)[0]["id"]
    j = int(top.split("-")[1])
    approx.add_items({"twin": "t"}, features=feats[j : j + 1])
    assert approx._snap.ann.size == 3000
    assert {x["id"] for x in approx.recommend(h, k=2)} == {top, "twin"}
    many = {f"new-{i}": "t" for i in range(1100)}
    approx.add_items(many, features=np.random.default_rng(0).normal(size=(1100, 16)))
    assert approx._snap.ann.size == 4101 and approx.num_items == 4101
    assert {x["id"] for x in approx.recommend(h, k=2)} == {top, "twin"}


def test_faiss_missing_is_a_user_error(inductive_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(UserError, match="unisrec\\[faiss\\]"):
        Recommender.from_pretrained(inductive_dir, index="faiss")


@needs_encoder
def test_add_items_by_text_with_the_models_encoder(tmp_path):
    model_dir = text_model_dir(tmp_path)
    rec = Recommender.from_pretrained(model_dir)
    text = "Vernier caliper, 200 mm, hardened steel. Measuring tools. Mitutoyo."
    cold = rec.embed_sequences([["A2", "NEW"]], item_texts={"NEW": text})
    with pytest.raises(UnknownItemsError):
        rec.recommend(["A2", "NEW"])
    rec.add_items({"NEW": text})
    np.testing.assert_allclose(rec.embed_sequences([["A2", "NEW"]]), cold, atol=1e-5)
    got = rec.recommend(["A2", "NEW"], k=len(SCIENCE_TEXTS) + 1)
    assert "NEW" in [x["id"] for x in got]
    x = rec.text_encoder().encode([text])  # the encoder config.json names, built by the Recommender
    with torch.no_grad():
        want = rec.model.adaptor(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(rec.item_embeddings()[1][-1], want[0], atol=1e-4)


def test_cli_recommend_and_export(inductive_dir, tmp_path, capsys):
    assert cli_main(["recommend", str(inductive_dir), "--history", "item-1,item-2", "--k", "3", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)["items"]
    rec = Recommender.from_pretrained(inductive_dir)
    assert [x["id"] for x in got] == [x["id"] for x in rec.recommend(["item-1", "item-2"], k=3)]
    assert cli_main(["recommend", str(inductive_dir), "--history", "item-1,ghost"]) == 2
    assert "'ghost'" in capsys.readouterr().err
    assert cli_main(["recommend", str(inductive_dir), "--history", "item-3", "--k", "2"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 3

    ids, vectors = rec.item_embeddings(normalize=True)
    assert cli_main(["export-embeddings", str(inductive_dir), "--output", str(tmp_path / "e.npy"), "--normalize"]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), vectors, atol=1e-6)
    assert (tmp_path / "e.ids.txt").read_text().splitlines() == ids
    assert cli_main(["export-embeddings", str(inductive_dir), "--output", str(tmp_path / "e.parquet")]) == 0
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "e.parquet")
    assert table.column("id").to_pylist() == ids
    np.testing.assert_allclose(np.array(table.column("vector").to_pylist()), rec.item_embeddings()[1], atol=1e-6)
    assert cli_main(["export-embeddings", str(inductive_dir), "--output", str(tmp_path / "e.csv")]) == 2
    # a sequence vector from embed_sequences ranks like recommend (inner product on unit vectors)
    q = rec.embed_sequences([["item-1", "item-2"]], normalize=True)[0]
    assert [ids[i] for i in np.argsort(-(vectors @ q))[:3]] == [x["id"] for x in got]
