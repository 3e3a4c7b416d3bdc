"""A damaged model directory is a one-line error naming the file, for every command that loads one
(evaluate, recommend, export-embeddings) -- never a traceback from deep inside."""

from __future__ import annotations

import shutil

import pytest

from unisrec.cli import main
from test_finetune import make_toy


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("damage")
    make_toy(root / "toy")
    out = root / "model"
    args = ["finetune", str(root / "toy"), "--output", str(out), "--epochs", "1", "--hidden-size", "16", "--inner-size", "16",
            "--n-experts", "2", "--batch-size", "64", "--progress", "false", "--threads", "1"]
    assert main(args) == 0
    return out


DAMAGE = {
    "model.safetensors": [b"", b"\x00" * 7, b"not safetensors at all"],
    "config.json": [b"", b"{\"model_type\": \"unisrec\"", b"[1, 2]"],
    "catalogue/features.npy": [b"", b"\x93NUMPY\x01\x00"],
    "catalogue/items.parquet": [b"", b"PAR1 truncated"],
}


@pytest.mark.parametrize("name,content", [(n, c) for n, cs in DAMAGE.items() for c in cs])
def test_damaged_file_is_a_one_line_error_naming_it(model_dir, tmp_path, capsys, name, content):
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / name).write_bytes(content)
    capsys.readouterr()
    for command in (["evaluate", str(broken), "--json"], ["recommend", str(broken), "--history", "1,2"],
                    ["export-embeddings", str(broken), "--output", str(tmp_path / "e.npy")]):
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error:" in err and name.split("/")[-1] in err, (command, err)
        assert "Traceback" not in err


def test_missing_weights_is_a_one_line_error(model_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "model.safetensors").unlink()
    assert main(["evaluate", str(broken)]) == 2
    assert "model.safetensors is missing" in capsys.readouterr().err


def test_non_finite_features_or_weights_are_refused_by_evaluate(model_dir, tmp_path, capsys):
    """evaluate refuses what recommend and serve refuse: NaN / infinite catalogue features or weights
    (they would rank silently wrong: a NaN score never counts as above the target's)."""
    import numpy as np
    import safetensors.torch
    import torch

    broken = tmp_path / "nan-features"
    shutil.copytree(model_dir, broken)
    feats = np.load(broken / "catalogue" / "features.npy")
    feats[3, 1] = np.nan
    np.save(broken / "catalogue" / "features.npy", feats)
    capsys.readouterr()
    assert main(["evaluate", str(broken), "--json"]) == 2
    err = capsys.readouterr().err
    assert "features.npy" in err and "NaN or infinite" in err and "'i3'" in err and err.count("\n") == 1, err
    broken = tmp_path / "inf-weights"
    shutil.copytree(model_dir, broken)
    weights = safetensors.torch.load_file(str(broken / "model.safetensors"))
    name = next(k for k, v in weights.items() if v.is_floating_point())
    weights[name].view(-1)[0] = float("inf")
    safetensors.torch.save_file(weights, str(broken / "model.safetensors"))
    assert main(["evaluate", str(broken), "--json"]) == 2
    err = capsys.readouterr().err
    assert "model.safetensors" in err and "NaN or infinite" in err and name in err and err.count("\n") == 1, err
