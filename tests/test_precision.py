"""`--precision bfloat16`: each training step's forward pass under autocast, for every registered model.

What must hold: the step really runs in bfloat16 (its loss differs from float32's), yet stays close to it;
gradients reach the float32 weights; weights, optimizer state and validation stay float32; a bfloat16
run learns as a float32 one does; a precision the code cannot run is a clear error."""

from __future__ import annotations

import json
import typing
from dataclasses import is_dataclass

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from test_finetune import make_toy
from test_pretrain import domains, small_model  # noqa: F401  (a fixture and its model config)
from unisrec.data.dataset import Dataset
from unisrec.errors import UserError
from unisrec.models import registry
from unisrec.models.checkpoint import config_from_dict
from unisrec.models.popularity import evaluate_popularity
from unisrec.training.config import PretrainConfig, TrainConfig
from unisrec.training.loop import step_precision
from unisrec.training.supervised import SupervisedTask, build_model

SMALL_MODEL = dict(hidden_size=16, inner_size=16, n_experts=2)


@pytest.fixture(scope="module")
def shops(tmp_path_factory):
    root = tmp_path_factory.mktemp("shops")
    make_toy(root / "target")
    make_toy(root / "source", seed=1)  # the same "random" encoder name: a source for the cross-domain models
    return root


def field_names(cls) -> set[str]:
    """A config's field names, its nested configs' included (config_from_dict takes them flat)."""
    names = set()
    for name, tp in typing.get_type_hints(cls).items():
        names.add(name)
        if isinstance(tp, type) and is_dataclass(tp):
            names |= field_names(tp)
    return names


def small_config(spec):
    """The model's config at toy sizes with every random part of the forward pass off (dropout, the
    MoE's gate noise), so both precisions compute the same function."""
    names = field_names(spec.config_class)
    values = {k: v for k, v in SMALL_MODEL.items() if k in names}
    values.update({name: 0.0 for name in names if "dropout" in name})
    values.update({"noisy_gating": False} if "noisy_gating" in names else {})
    return config_from_dict(spec.config_class, values)


def first_step_losses(name, shops, batching=None):
    """The loss of the same first step in float32 and in bfloat16, and the float32 weights' gradients."""
    spec = registry.get(name)
    train = TrainConfig(batch_size=64, source=[str(shops / "source")] if hasattr(spec.model_class, "joint_task") else [],
                        batching=batching or spec.default_batching or "last-item")
    model, ds, sources, _, _ = build_model(spec, shops / "target", train, small_config(spec))
    device = torch.device("cpu")
    task = model.joint_task(ds, sources, train, device) if sources else SupervisedTask(model, ds, train, device)
    tasks = {"train": task}
    if hasattr(model, "pretraining_task"):
        tasks["pretrain"] = model.pretraining_task(ds, train, device)
    out = {}
    for part, t in tasks.items():
        batch = t.batches(1)[0]
        losses = {}
        for precision in ("float32", "bfloat16"):
            torch.manual_seed(0)
            np.random.seed(0)
            with step_precision(device, precision):
                loss, _, _ = t.step_loss(batch)
            module = getattr(t, "module", model)
            module.zero_grad(set_to_none=True)
            loss.backward()
            grads = [p.grad for p in module.parameters() if p.requires_grad and p.grad is not None]
            losses[precision] = (float(loss.detach()), grads)
        out[part] = losses
    return out


@pytest.mark.parametrize("name", ["sasrec", "unisrec", "bert4rec", "fdsa", "s3rec", "zesrec", "recguru", "ccdr"])
def test_a_bfloat16_step_is_bfloat16_close_to_float32_with_float32_gradients(name, shops):
    for part, losses in first_step_losses(name, shops).items():
        f32, bf16 = losses["float32"][0], losses["bfloat16"][0]
        assert np.isfinite(bf16), (name, part)
        assert bf16 != f32, f"{name} {part}: the bfloat16 step computed exactly the float32 loss: autocast did nothing"
        assert abs(bf16 - f32) <= 0.02 * abs(f32) + 1e-3, (name, part, f32, bf16)
        grads = losses["bfloat16"][1]
        assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads), (name, part)
        assert sum(float(g.abs().sum()) for g in grads) > 0


def test_the_fast_path_of_unisrec_runs_in_bfloat16_too(shops):
    losses = first_step_losses("unisrec", shops, batching="every-position")["train"]
    f32, bf16 = losses["float32"][0], losses["bfloat16"][0]
    assert bf16 != f32 and abs(bf16 - f32) <= 0.02 * f32


def test_a_bfloat16_run_learns_and_keeps_float32_weights_through_the_cli(shops, tmp_path):
    from unisrec.cli import main

    out = tmp_path / "sasrec"
    args = ["train", "sasrec", str(shops / "target"), "--output", str(out), "--batch-size", "64", "--lr", "3e-3",
            "--progress", "false", "--threads", "1", "--hidden-size", "32", "--inner-size", "32", "--epochs", "4",
            "--batching", "every-position"]
    assert main([*args, "--precision", "bfloat16"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    popularity = evaluate_popularity(Dataset.load(shops / "target"))["recall@10"]
    assert metrics["test"]["recall@10"] > max(3 * popularity, 0.5), (metrics["test"], popularity)
    assert json.loads((out / "config.json").read_text())["training"]["precision"] == "bfloat16"
    assert {t.dtype for t in load_file(str(out / "model.safetensors")).values()} == {torch.float32}
    with pytest.raises(SystemExit) as exc:  # argparse: not one of the choices
        main([*args, "--precision", "float16", "--output", str(tmp_path / "x")])
    assert exc.value.code == 2


def test_precision_is_checked():
    with pytest.raises(UserError, match="precision"):
        TrainConfig(precision="float16")
    with pytest.raises(UserError, match="precision"):
        PretrainConfig(precision="fp8")
    with step_precision(torch.device("cpu"), "float32"):
        assert not torch.is_autocast_enabled("cpu")
    with step_precision(torch.device("cpu"), "bfloat16"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def test_bfloat16_pretraining_lowers_the_loss_and_writes_float32_weights(domains, tmp_path):  # noqa: F811
    from unisrec.training.pretrain import pretrain

    cfg = PretrainConfig(epochs=4, batch_size=128, lr=3e-3, save_every=0, precision="bfloat16")
    _, summary = pretrain(domains, tmp_path / "o", cfg, small_model(), show_progress=False)
    losses = [e["loss_si"] for e in summary["epochs"]]
    assert losses[-1] < 0.8 * losses[0]
    assert {t.dtype for t in load_file(str(tmp_path / "o" / "model.safetensors")).values()} == {torch.float32}


def test_the_native_bfloat16_probe_agrees_with_the_cpus_own_flags():
    """`auto` stands on this probe: on Linux the kernel's flags say whether the CPU multiplies bfloat16."""
    from pathlib import Path

    from unisrec.training.loop import native_bfloat16

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo to compare with")
    flags = set(cpuinfo.read_text().split())
    assert native_bfloat16(torch.device("cpu")) == bool({"avx512_bf16", "amx_bf16"} & flags)


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bfloat16_only_where_the_device_multiplies_it_natively(native, monkeypatch):
    from unisrec.training import loop

    monkeypatch.setattr(loop, "native_bfloat16", lambda device: native)
    cpu = torch.device("cpu")
    said = []
    assert loop.resolve_precision("auto", cpu, said.append) == ("bfloat16" if native else "float32")
    assert loop.resolve_precision("float32", cpu, said.append) == "float32"
    assert said == []
    with loop.step_precision(cpu, "auto"):
        assert torch.is_autocast_enabled("cpu") is native
    # asked for explicitly, bfloat16 is kept -- with a warning where it is emulated (many times slower)
    assert loop.resolve_precision("bfloat16", cpu, said.append) == "bfloat16"
    if native:
        assert said == []
    else:
        assert len(said) == 1 and "emulated" in said[0]


@pytest.mark.parametrize("native", [True, False])
def test_an_auto_run_records_the_precision_each_epoch_ran_in(native, shops, tmp_path, monkeypatch, capsys):
    from unisrec.cli import main
    from unisrec.training import loop

    monkeypatch.setattr(loop, "native_bfloat16", lambda device: native)
    out = tmp_path / "auto"
    assert main(["train", "sasrec", str(shops / "target"), "--output", str(out), "--batch-size", "64", "--progress", "false",
                 "--threads", "1", "--hidden-size", "16", "--inner-size", "16", "--epochs", "2", "--batching", "every-position",
                 "--precision", "auto"]) == 0
    ran = "bfloat16" if native else "float32"
    assert json.loads((out / "config.json").read_text())["training"]["precision"] == "auto"  # what was asked
    epochs = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert [e["precision"] for e in epochs] == [ran, ran]  # what ran
    assert f"precision auto: {ran}" in capsys.readouterr().out
