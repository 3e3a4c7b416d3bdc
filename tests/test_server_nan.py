"""Non-finite numbers: a catalogue with NaN/inf features is refused at load (naming the items), and
no reply or `unisrec recommend --json` output ever holds NaN."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from serving_fixtures import make_model_dir, random_model_dir
from unisrec.cli import main as cli_main
from unisrec.errors import UserError
from unisrec.serving.recommender import InvalidRequest, Recommender


def strict_json(text: str):
    """json.loads that refuses NaN / Infinity (Python's json accepts them by default)."""

    def refuse(token):
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture()
def nan_dir(tmp_path):
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(21, 16)).astype(np.float32)
    feats[0] = 0
    feats[4, 3] = np.nan  # item-4
    feats[9, :] = np.inf  # item-9
    ids = [f"item-{i}" for i in range(1, 21)]
    return make_model_dir(tmp_path, ids, [f"text {i}" for i in ids], feats)


def test_nan_features_are_refused_at_load(nan_dir):
    with pytest.raises(UserError) as err:
        Recommender.from_pretrained(nan_dir)
    msg = str(err.value)
    assert "2 catalogue items have NaN or infinite vectors" in msg
    assert "'item-4', 'item-9'" in msg and "features.npy" in msg


def test_cli_recommend_refuses_nan_catalogue(nan_dir, capsys):
    assert cli_main(["recommend", str(nan_dir), "--history", "item-1", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "'item-4'" in captured.err


def test_cli_recommend_json_is_strict_json(tmp_path, capsys):
    model_dir = random_model_dir(tmp_path, n=20)
    assert cli_main(["recommend", str(model_dir), "--history", "item-1,item-2", "--k", "20", "--json"]) == 0
    items = strict_json(capsys.readouterr().out)["items"]
    assert len(items) == 20 and all(math.isfinite(x["score"]) for x in items)


def test_non_finite_scores_are_never_returned(tmp_path):
    """Belt and braces: if a vector still turned NaN after load, its item is dropped, not ranked first."""
    rec = Recommender.from_pretrained(random_model_dir(tmp_path, n=20))
    before = [x["id"] for x in rec.recommend(["item-1"], k=20)]
    rec._snap.unit[5] = float("nan")  # item-5
    rec._snap.unit[6] = float("inf")  # item-6
    got = rec.recommend(["item-1"], k=20)
    assert [x["id"] for x in got] == [i for i in before if i not in ("item-5", "item-6")]
    assert all(math.isfinite(x["score"]) for x in got)
    strict_json(json.dumps({"items": got}, allow_nan=False))


def test_non_finite_new_features_are_refused(tmp_path):
    rec = Recommender.from_pretrained(random_model_dir(tmp_path, n=20))
    bad = np.ones((1, 16), np.float32)
    bad[0, 2] = np.nan
    with pytest.raises(InvalidRequest, match="NaN"):
        rec.add_items({"new": "text"}, features=bad)
    assert rec.num_items == 20 and "new" not in rec
    rec.add_items({"ok": "text"}, features=np.ones((1, 16), np.float32))
    with torch.no_grad():  # weights that overflow: the item is refused, the catalogue unchanged
        for p in rec.model.adaptor.parameters():
            p.mul_(1e30)
    with pytest.raises(InvalidRequest, match="NaN or infinite"):
        rec.add_items({"huge": "text"}, features=np.full((1, 16), 1e30, np.float32))
    assert rec.num_items == 21 and "huge" not in rec
