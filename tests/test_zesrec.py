"""ZESRec: a linear text projection + the shared Transformer, no per-item weights; trained on one
generated shop domain and applied zero-shot to another catalogue by text alone (better than
popularity, the target never trained on, the model directory untouched), the refusal kept for ID
models, and `--init-from` for fine-tuning from the source weights."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import zlib

import numpy as np
import pytest
import torch

from unisrec.data.dataset import Dataset
from unisrec.errors import UserError
from unisrec.models.checkpoint import config_from_dict
from unisrec.models.sasrec import SASRecConfig
from unisrec.models.zesrec import ZESRec, ZESRecConfig
from unisrec.training.config import TrainConfig
from unisrec.training.supervised import train_model

DIM = 256
SMALL = ["--hidden-size", "32", "--inner-size", "32", "--progress", "false", "--threads", "1"]


def bag_of_words(texts: list[str], dim: int = DIM) -> np.ndarray:
    """A stand-in text encoder: each word a fixed random vector (seeded by the word), an item the mean
    of its words' vectors. Words shared by two domains (colours, motifs, brands, materials) give
    their items shared directions; a domain's own product words are new to the other domain."""
    out = np.zeros((len(texts) + 1, dim), np.float32)
    for i, text in enumerate(texts, 1):
        words = re.findall(r"[a-z]+", text.lower())
        out[i] = np.mean([np.random.default_rng(zlib.crc32(w.encode())).normal(size=dim) for w in words], 0)
    return out


def add_features(path, name="bow", encoder="test-bag-of-words", keep_others=True) -> Dataset:
    ds = Dataset.load(path)
    (path / "features").mkdir(exist_ok=True)
    np.save(path / "features" / f"{name}.npy", bag_of_words(ds.item_texts))
    feats = dict(ds.manifest.get("features") or {}) if keep_others else {}
    feats[name] = {"file": f"features/{name}.npy", "dim": DIM, "encoder": encoder, "pooling": "mean"}
    ds.update_manifest(features=feats, default_features=name)
    return Dataset.load(path)


def digest(path) -> str:
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """Source "pets" and target "office" of the synthetic shop (same behaviour, shared theme and brand
    words, different products), and a ZESRec trained on the source, with every
    ``Dataset.examples`` call of training recorded."""
    from unisrec.cli import main
    from unisrec.data.sources.table import prepare_table
    from unisrec.data.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("shop")
    raw = generate_synthetic(root / "raw", seed=0)
    for name in ("pets", "office"):
        prepare_table(raw[name] / "interactions.csv", raw[name] / "items.csv", root / name)
        add_features(root / name)
    calls = []
    original = Dataset.examples

    def recording(self, split, max_history=50):
        calls.append((self.path.resolve(), split))
        return original(self, split, max_history)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Dataset, "examples", recording)
        assert main(["train", "zesrec", str(root / "pets"), "--output", str(root / "z"), "--batch-size", "256",
                     "--lr", "0.003", "--epochs", "5", *SMALL]) == 0
    return {"source": root / "pets", "target": root / "office", "model": root / "z", "train_calls": calls, "root": root}


def test_items_are_a_linear_map_of_their_text_no_per_item_weights_dot_product_scores():
    torch.manual_seed(0)
    cfg = config_from_dict(ZESRecConfig, dict(hidden_size=8, inner_size=8, max_seq_length=5))
    model = ZESRec.for_dataset(cfg, 3, torch.randn(4, 6)).eval()
    x1, x2 = torch.randn(6), torch.randn(6)
    for a in (0.3, 2.0):  # an affine map keeps affine combinations: no non-linearity between the layers
        model.set_item_features(torch.stack([torch.zeros(6), x1, x2, a * x1 + (1 - a) * x2]))
        v = model.item_representations()
        torch.testing.assert_close(v[3], a * v[1] + (1 - a) * v[2])
    seq, lens = torch.tensor([[1, 2], [3, 0]]), torch.tensor([2, 1])
    logits = model(seq, lens)
    s = model.sequence_representation(seq, lens)
    torch.testing.assert_close(logits[:, 1:], s @ model.item_representations()[1:].T)
    assert torch.isneginf(logits[:, 0]).all()
    big = ZESRec.for_dataset(cfg, 50, torch.randn(51, 6))
    assert {k: v.shape for k, v in big.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    model.set_item_features(torch.randn(51, 6))  # any catalogue size
    assert model(seq, lens).shape == (2, 51)
    with pytest.raises(ValueError, match="text_dim"):
        model.set_item_features(torch.randn(5, 7))
    with pytest.raises(UserError, match="text features"):
        ZESRec.for_dataset(cfg, 3, None)


def test_zero_shot_scores_an_unseen_catalogue_by_text_better_than_popularity(shop, capsys, monkeypatch):
    from unisrec.cli import main
    from unisrec.models.popularity import evaluate_popularity

    source, target, model_dir = Dataset.load(shop["source"]), Dataset.load(shop["target"]), shop["model"]
    assert not set(source.item_ids) & set(target.item_ids)  # a catalogue the model never saw
    # training touched the source only: the target's sequences never reached it
    assert {path for path, _ in shop["train_calls"]} == {shop["source"].resolve()}
    before = digest(model_dir)
    calls = []
    original = Dataset.examples
    monkeypatch.setattr(Dataset, "examples", lambda self, split, max_history=50: calls.append((self.path.resolve(), split)) or original(self, split, max_history))
    capsys.readouterr()
    assert main(["evaluate", str(model_dir), "--dataset", str(shop["target"]), "--json"]) == 0
    zero_shot = json.loads(capsys.readouterr().out)
    assert calls == [(shop["target"].resolve(), "test")]  # evaluation reads the target's test rows, nothing else
    assert digest(model_dir) == before  # and leaves the model directory's weights as they were
    pop = evaluate_popularity(target)
    assert zero_shot["recall@10"] > pop["recall@10"] + 0.08 and zero_shot["ndcg@10"] > pop["ndcg@10"] + 0.04
    # on its own domain it still evaluates as trained (its own catalogue and features back in place)
    assert main(["evaluate", str(model_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads((model_dir / "metrics.json").read_text())["test"]


def test_id_models_are_still_refused_on_another_catalogue(shop, tmp_path):
    from unisrec.evaluation.cli import evaluate_dir

    out = tmp_path / "sasrec"
    train_model("sasrec", shop["target"], out, TrainConfig(epochs=1, batch_size=256, progress=False, threads=1),
                config_from_dict(SASRecConfig, dict(hidden_size=8, inner_size=8)))
    with pytest.raises(UserError, match="different item catalogue"):
        evaluate_dir(str(out), dataset=str(shop["source"]))


def test_zero_shot_needs_the_same_text_encoder(shop, tmp_path):
    from unisrec.evaluation.cli import evaluate_dir

    other = tmp_path / "office_other"
    shutil.copytree(shop["target"], other)
    add_features(other, name="other", encoder="some-other-encoder", keep_others=False)
    with pytest.raises(UserError, match=r"'bow' \(test-bag-of-words.*other \(some-other-encoder"):
        evaluate_dir(str(shop["model"]), dataset=str(other))


def test_init_from_starts_from_the_source_weights_with_strict_checks(shop, tmp_path):
    from safetensors.torch import load_file

    from unisrec.cli import main

    src = load_file(str(shop["model"] / "model.safetensors"))
    # a learning rate so small that one epoch leaves the starting weights as they were
    args = ["train", "zesrec", str(shop["target"]), "--batch-size", "256", "--epochs", "1", "--lr", "1e-9", *SMALL]
    assert main([*args, "--output", str(tmp_path / "ft"), "--init-from", str(shop["model"])]) == 0
    ft = load_file(str(tmp_path / "ft" / "model.safetensors"))
    for k in src:
        torch.testing.assert_close(ft[k], src[k], atol=1e-6, rtol=0)
    assert json.loads((tmp_path / "ft" / "config.json").read_text())["training"]["init_from"] == str(shop["model"])
    assert main([*args, "--output", str(tmp_path / "scratch")]) == 0  # without it: a fresh initialisation
    assert not torch.allclose(load_file(str(tmp_path / "scratch" / "model.safetensors"))["projection.0.weight"], src["projection.0.weight"])
    # another architecture, another model type, another catalogue for an ID model, another text encoder
    wide = TrainConfig(epochs=1, progress=False, threads=1, init_from=str(shop["model"]))
    with pytest.raises(UserError, match=r"do not fit this zesrec model .*encoder.layers.0.attention.query.weight \(32, 32\) vs \(16, 16\)"):
        train_model("zesrec", shop["target"], tmp_path / "x", wide, config_from_dict(ZESRecConfig, dict(hidden_size=16, inner_size=16)))
    small = dict(hidden_size=8, inner_size=8)
    train_model("sasrec", shop["target"], tmp_path / "sas", TrainConfig(epochs=1, batch_size=256, progress=False, threads=1),
                config_from_dict(SASRecConfig, small))
    with pytest.raises(UserError, match="holds a 'sasrec' model, not zesrec"):
        train_model("zesrec", shop["target"], tmp_path / "y", TrainConfig(epochs=1, init_from=str(tmp_path / "sas")), ZESRecConfig())
    with pytest.raises(UserError, match=r"item_embedding.weight \(\d+, 8\) vs \(\d+, 8\).*per-item weights cannot start from another catalogue"):
        train_model("sasrec", shop["source"], tmp_path / "z", TrainConfig(epochs=1, init_from=str(tmp_path / "sas")), config_from_dict(SASRecConfig, small))
    other = tmp_path / "office_other"
    shutil.copytree(shop["target"], other)
    add_features(other, name="bow", encoder="some-other-encoder")
    with pytest.raises(UserError, match="encoder 'test-bag-of-words'.*'some-other-encoder'"):
        train_model("zesrec", other, tmp_path / "w", TrainConfig(epochs=1, init_from=str(shop["model"])),
                    config_from_dict(ZESRecConfig, dict(hidden_size=32, inner_size=32)))
