"""The model registry: a model written as one file + one registration trains, saves, reloads and
evaluates through the CLI exactly like the built-in ones (docs/adding_a_model.md)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from torch import nn

from unisrec.errors import UserError
from unisrec.models import registry
from unisrec.models.base import SequentialRecommender
from unisrec.models.encoder import EncoderConfig
from test_finetune import make_toy


@dataclass
class MeanPoolConfig:
    """A toy: the sequence vector is the mean of the history's item embeddings (no Transformer)."""

    last_item_weight: float = field(default=1.0, metadata={"help": "extra weight of the most recent item"})
    encoder: EncoderConfig = field(default_factory=lambda: EncoderConfig(hidden_size=16, inner_size=16))
    num_items: int = field(default=0, metadata={"derived": True})


class MeanPool(SequentialRecommender):
    model_type = "meanpool"
    config_class = MeanPoolConfig

    def __init__(self, config: MeanPoolConfig):
        super().__init__()
        self.config = config
        self.item_embedding = nn.Embedding(config.num_items + 1, config.encoder.hidden_size, padding_idx=0)

    @classmethod
    def for_dataset(cls, config, num_items, features=None):
        return cls(dataclasses.replace(config, num_items=num_items))

    def item_representations(self, items=None):
        return self.item_embedding.weight if items is None else self.item_embedding(items)

    def sequence_representation(self, seq, lengths, table=None):
        emb = (self.item_embedding.weight if table is None else table)[seq]
        mean = emb.sum(1) / lengths.clamp(min=1)[:, None]
        return mean + self.config.last_item_weight * emb[torch.arange(len(seq)), lengths - 1]

    def scores(self, seq_repr, table):
        logits = seq_repr @ table.T
        logits[:, 0] = float("-inf")
        return logits


@pytest.fixture
def toy_model():
    registry.register(registry.ModelSpec("meanpool", MeanPool, "toy mean-pooling model", batchings=("last-item",)))
    yield
    registry.unregister("meanpool")


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "toy"
    make_toy(path)
    return path


def test_a_registered_toy_model_trains_saves_reloads_and_evaluates_through_the_cli(toy_model, toy_data, tmp_path, capsys):
    from unisrec.cli import main
    from unisrec.models.model_dir import load_model

    out = tmp_path / "m"
    args = ["train", "meanpool", str(toy_data), "--output", str(out), "--batch-size", "64", "--lr", "0.05",
            "--progress", "false", "--threads", "1", "--last-item-weight", "2.0", "--hidden-size", "8"]
    assert main([*args, "--epochs", "8"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "meanpool" and cfg["model"]["last_item_weight"] == 2.0  # its own flag reached its config
    assert cfg["model"]["encoder"]["hidden_size"] == 8
    metrics = json.loads((out / "metrics.json").read_text())
    log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(1, 9))
    # peak memory is logged per epoch and the run's largest lands in metrics.json (torch alone holds > 100 MB)
    assert all(r["peak_rss_mb"] > 100 for r in log) and metrics["peak_rss_mb"] >= max(r["peak_rss_mb"] for r in log)
    # it learned the toy's next-item rule far beyond a random ranking of 40 items (recall@10 = 0.25)
    assert metrics["test"]["recall@10"] > 0.5
    model = load_model(out)
    assert isinstance(model, MeanPool) and model.config.last_item_weight == 2.0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json", "--split", "test"]) == 0
    assert json.loads(capsys.readouterr().out) == metrics["test"]
    # resume works for it too: a finished run asks for --resume, and --resume with more epochs continues
    assert main([*args, "--epochs", "9"]) == 2
    assert main([*args, "--epochs", "9", "--resume"]) == 0
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == 9


def test_batching_the_model_does_not_support_is_refused(toy_model, toy_data, tmp_path):
    from unisrec.training.config import TrainConfig
    from unisrec.training.supervised import train_model

    with pytest.raises(UserError, match="does not support --batching every-position"):
        train_model("meanpool", toy_data, tmp_path / "x", TrainConfig(batching="every-position"))


def test_unknown_names_and_model_types_are_clear_errors(tmp_path):
    from unisrec.models.model_dir import load_model

    with pytest.raises(UserError, match="unknown model 'nope'; known: .*sasrec.*unisrec"):
        registry.get("nope")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "nope", "model": {}}))
    with pytest.raises(UserError, match="unknown model_type 'nope'"):
        load_model(tmp_path)


def test_a_spec_must_match_its_class():
    with pytest.raises(ValueError, match="registered as 'other'"):
        registry.register(registry.ModelSpec("other", MeanPool))


def test_built_in_models_are_listed_without_importing_them():
    assert {"unisrec", "sasrec"} <= set(registry.names())
    assert all(registry.describe().values())
    for name in ("unisrec", "sasrec"):
        spec = registry.get(name)
        assert spec.model_class.model_type == name and issubclass(spec.model_class, SequentialRecommender)
        assert np.all([isinstance(b, str) for b in spec.batchings])
