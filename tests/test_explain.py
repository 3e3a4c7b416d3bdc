"""`unisrec explain` (the paper's Fig. 5 case study) on tiny generated model directories."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from serving_fixtures import make_model_dir, random_model_dir

from unisrec.cli import main
from unisrec.errors import UserError
from unisrec.evaluation.explain import explain
from unisrec.models.model_dir import load_catalogue
from unisrec.models.unisrec import UniSRec
from unisrec.serving.recommender import Recommender

HISTORY = ["item-3", "item-17", "item-8"]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    model = random_model_dir(root / "target", n=50, text_dim=16, seed=0)
    trans = random_model_dir(root / "trans", n=50, text_dim=16, mode="transductive", seed=3)
    with torch.no_grad():  # an ID table large enough to change the ranking if it leaked into the text vectors
        m = UniSRec.from_pretrained(trans)
        m.item_id_embedding.weight.normal_(0, 1.0)
        meta = json.loads((trans / "config.json").read_text())
        m.save_pretrained(trans, {k: v for k, v in meta.items() if k not in ("model_type", "model")})
    source = random_model_dir(root / "source", n=30, text_dim=16, seed=1)
    return {"model": model, "trans": trans, "source_model": source, "source_data": root / "source" / "data", "root": root}


def brute_force_neighbours(model_dir, rec_ids, source_dir, n):
    """Cosine nearest source items computed independently: the adaptor on raw features, numpy argsort."""
    m = UniSRec.from_pretrained(model_dir).eval()
    ids, _, feats = load_catalogue(model_dir)
    src_ids, _, src_feats = load_catalogue(source_dir)
    with torch.no_grad():
        q = m.adaptor(torch.from_numpy(np.array(feats)[[ids.index(r) + 1 for r in rec_ids]])).numpy()
        s = m.adaptor(torch.from_numpy(np.array(src_feats)[1:])).numpy()
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    s /= np.linalg.norm(s, axis=1, keepdims=True)
    cos = q @ s.T
    order = np.argsort(-cos, axis=1, kind="stable")[:, :n]
    return [[src_ids[j] for j in row] for row in order], np.take_along_axis(cos, order, 1)


@pytest.mark.parametrize("which", ["model", "trans"])
def test_recommendations_are_the_recommenders_and_neighbours_are_nearest(dirs, which, capsys):
    model = dirs[which]
    rc = main(["explain", str(model), "--history", ",".join(HISTORY), "--k", "5", "--source", str(dirs["source_model"]),
               "--neighbours", "4", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    want = Recommender.from_pretrained(model).recommend(HISTORY, 5)
    assert [(r["id"], r["score"], r["text"]) for r in out["recommendations"]] == [(w["id"], w["score"], w["text"]) for w in want]
    assert [r["rank"] for r in out["recommendations"]] == [1, 2, 3, 4, 5]
    _, texts, _ = load_catalogue(model)
    assert out["history"] == [{"id": h, "text": texts[int(h.split("-")[1]) - 1]} for h in HISTORY]
    ids, cos = brute_force_neighbours(model, [w["id"] for w in want], dirs["source_model"], 4)
    for r, want_ids, want_cos in zip(out["recommendations"], ids, cos):
        assert [n["id"] for n in r["source_neighbours"]] == want_ids
        np.testing.assert_allclose([n["cosine"] for n in r["source_neighbours"]], want_cos, rtol=1e-5, atol=1e-6)


def test_dataset_source_equals_model_source_and_text_output(dirs, capsys):
    a = explain(str(dirs["model"]), HISTORY, 3, str(dirs["source_model"]))
    b = explain(str(dirs["model"]), HISTORY, 3, str(dirs["source_data"]))
    assert [r["source_neighbours"] for r in a["recommendations"]] == [r["source_neighbours"] for r in b["recommendations"]]
    assert main(["explain", str(dirs["model"]), "--history", ",".join(HISTORY), "--k", "3", "--source", str(dirs["source_data"])]) == 0
    text = capsys.readouterr().out
    assert "text of item 17" in text and a["recommendations"][0]["id"] in text
    assert sum(line.lstrip().startswith("~ ") for line in text.splitlines()) == 3 * 3  # three under each of three


def test_exclude_seen_and_errors(dirs):
    res = explain(str(dirs["model"]), HISTORY, 50, exclude_seen=True)
    assert not {r["id"] for r in res["recommendations"]} & set(HISTORY) and len(res["recommendations"]) == 47
    with pytest.raises(UserError, match="not in the catalogue"):
        explain(str(dirs["model"]), ["item-3", "nope"], 3)
    # a source whose text vectors come from another encoder (here: another size) is refused
    rng = np.random.default_rng(0)
    other = make_model_dir(dirs["root"] / "other", ["x1", "x2"], ["a", "b"], rng.normal(size=(3, 8)).astype(np.float32))
    with pytest.raises(UserError, match="not the model's"):
        explain(str(dirs["model"]), HISTORY, 3, str(other))
    with pytest.raises(UserError, match="no matching feature set"):
        explain(str(dirs["model"]), HISTORY, 3, str(dirs["root"] / "other" / "data"))
