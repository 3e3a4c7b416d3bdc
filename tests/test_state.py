"""The resume state is swapped in atomically: a crash at ANY step of a checkpoint write resumes
exactly (same losses, same test metrics as an uninterrupted run)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import safetensors.torch

from unisrec.training import state as state_module
from unisrec.training.config import TrainConfig
from unisrec.training.supervised import train_model
from test_finetune import make_toy


class Crash(Exception):
    pass


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "toy"
    make_toy(path)
    return path


def run(toy, out, epochs, resume=False):
    from unisrec.models.checkpoint import config_from_dict
    from unisrec.models.sasrec import SASRecConfig

    train = TrainConfig(epochs=epochs, batch_size=64, lr=3e-3, progress=False, threads=1, eval_batch_size=64)
    model = config_from_dict(SASRecConfig, dict(hidden_size=16, inner_size=16))
    return train_model("sasrec", toy, out, train, model, resume=resume)


def losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "training_log.jsonl").read_text().splitlines()]


def arm_crash(monkeypatch, at: int) -> list[str]:
    """Make the ``at``-th file operation of the SECOND checkpoint write raise; returns the op log."""
    ops: list[str] = []
    saves = {"n": 0}
    real_save_state = state_module.save_run_state

    def counting(name, fn):
        def wrapped(*args, **kwargs):
            if saves["n"] == 2:
                ops.append(name)
                if len(ops) == at:
                    raise Crash(f"crash at op {at} ({name})")
            return fn(*args, **kwargs)
        return wrapped

    def save_run_state(*args, **kwargs):
        saves["n"] += 1
        try:
            return real_save_state(*args, **kwargs)
        finally:
            if saves["n"] == 2:
                saves["n"] = 3  # only the second write is interrupted

    monkeypatch.setattr(state_module, "save_run_state", save_run_state)
    monkeypatch.setattr("unisrec.training.loop.save_run_state", save_run_state)
    monkeypatch.setattr(safetensors.torch, "save_file", counting("save_file", safetensors.torch.save_file))
    monkeypatch.setattr(Path, "write_text", counting("write_text", Path.write_text))
    monkeypatch.setattr(os, "replace", counting("replace", os.replace))
    monkeypatch.setattr(os, "link", counting("link", os.link))
    monkeypatch.setattr(shutil, "rmtree", counting("rmtree", shutil.rmtree))
    monkeypatch.setattr(state_module, "_fsync_dir", counting("fsync", state_module._fsync_dir))
    return ops


@pytest.fixture(scope="module")
def reference(toy, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "full"
    metrics = run(toy, out, 3)
    return losses(out), metrics["test"]


def count_ops(toy, tmp_path, monkeypatch) -> int:
    ops = arm_crash(monkeypatch, at=10**9)
    run(toy, tmp_path / "count", 2)
    monkeypatch.undo()
    return len(ops)


def test_every_crash_point_of_the_checkpoint_write_resumes_exactly(toy, tmp_path, monkeypatch, reference):
    ref_losses, ref_test = reference
    n_ops = count_ops(toy, tmp_path, monkeypatch)
    assert n_ops >= 8  # model, best, optimizer, rng, state.json, fsyncs, pointer, rename, clean-up
    for at in range(1, n_ops + 1):
        out = tmp_path / f"crash{at}"
        arm_crash(monkeypatch, at)
        with pytest.raises(Crash):
            run(toy, out, 3)
        monkeypatch.undo()
        resumed = run(toy, out, 3, resume=True)
        assert losses(out) == pytest.approx(ref_losses, rel=1e-6), f"crash at op {at}"
        assert resumed["test"] == pytest.approx(ref_test, rel=1e-6), f"crash at op {at}"
        gens = sorted(p.name for p in (out / "resume").glob("gen-*"))
        assert len(gens) == 1, f"stale generations left after op {at}: {gens}"


def test_a_damaged_pointer_is_a_clear_error(toy, tmp_path):
    from unisrec.errors import UserError

    out = tmp_path / "m"
    run(toy, out, 1)
    (out / "resume" / "CURRENT").write_text("gen-missing\n")
    with pytest.raises(UserError, match="incomplete; the resume state is damaged"):
        run(toy, out, 2, resume=True)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_weight_files_follow_the_umask(toy, tmp_path, umask):
    """safetensors writes a private temporary file and renames it (0600 whatever the umask); the model
    directory's and the resume state's weights get the mode any other file of the run gets."""
    out = tmp_path / "m"
    old = os.umask(umask)
    try:
        run(toy, out, 1)
    finally:
        os.umask(old)
    want = 0o666 & ~umask
    weights = [out / "model.safetensors", *(out / "resume").glob("gen-*/*.safetensors")]
    assert len(weights) >= 4
    modes = {str(p.relative_to(out)): oct(p.stat().st_mode & 0o777) for p in weights}
    assert set(modes.values()) == {oct(want)}, modes
    assert (out / "config.json").stat().st_mode & 0o777 == want
