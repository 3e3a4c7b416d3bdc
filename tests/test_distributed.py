"""Real 2-process DistributedDataParallel pre-training on CPU (gloo), launched with torchrun.

After a few steps the parameters must be identical on both ranks (gradients really synchronised,
unlike the authors' release) and equal, within float tolerance, to one process training on the
same global batches (dropout and gate noise off so both runs compute the same function).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from test_pretrain import make_domain

NO_NOISE = dict(
    hidden_size=32, inner_size=32, n_heads=2, n_experts=4,
    hidden_dropout=0.0, attn_dropout=0.0, adaptor_dropout=0.0, noisy_gating=False,
)
WORKER = textwrap.dedent(
    """
    import sys, torch
    from safetensors.torch import save_file
    from unisrec.models.checkpoint import config_from_dict
    from unisrec.models.unisrec import UniSRecConfig
    from unisrec.training.pretrain import PretrainConfig, pretrain

    out, *dirs = sys.argv[1:]
    torch.set_num_threads(1)
    cfg = PretrainConfig(epochs=2, max_steps=STEPS, batch_size=64, lr=3e-3, device="cpu", save_every=0)
    model, summary = pretrain(dirs, out, cfg, config_from_dict(UniSRecConfig, NO_NOISE), show_progress=False)
    rank = int(__import__("os").environ["RANK"])
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{out}/rank{rank}.safetensors")
    """
)
STEPS = 5


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp_domains")
    return [make_domain(root / "a", "a", seed=1), make_domain(root / "b", "b", n_items=40, seed=2)]


def torchrun_two(worker: str, tmp_path, domains):
    """Run ``worker`` (NO_NOISE filled in) as 2 gloo processes under torchrun: ``worker.py OUT DIR...``; returns OUT."""
    script, out = tmp_path / "worker.py", tmp_path / "ddp"
    script.write_text(worker.replace("NO_NOISE", repr(NO_NOISE)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), str(out), *map(str, domains)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_two_process_gloo_equals_single_process(domains, tmp_path):
    from safetensors.torch import load_file

    from unisrec.models.checkpoint import config_from_dict
    from unisrec.models.unisrec import UniSRecConfig
    from unisrec.training.pretrain import PretrainConfig, pretrain

    out = torchrun_two(WORKER.replace("STEPS", str(STEPS)), tmp_path, domains)
    rank0, rank1 = load_file(str(out / "rank0.safetensors")), load_file(str(out / "rank1.safetensors"))

    cfg = PretrainConfig(epochs=2, max_steps=STEPS, batch_size=64, lr=3e-3, device="cpu", save_every=0)
    single, _ = pretrain(domains, tmp_path / "single", cfg, config_from_dict(UniSRecConfig, NO_NOISE), show_progress=False)
    ref = single.state_dict()
    saved = load_file(str(out / "model.safetensors"))
    moved = 0.0
    for k, v in ref.items():
        if k == "item_features":
            continue
        assert torch.equal(rank0[k], rank1[k]), f"{k} differs between ranks: gradients not synchronised"
        assert torch.allclose(rank0[k], v, atol=2e-5, rtol=1e-4), f"{k}: 2 processes != 1 process, max diff {(rank0[k] - v).abs().max()}"
        moved = max(moved, float((v - saved[k]).abs().max()))
    # rank 0 wrote the checkpoint and the log; both describe a 2-process run
    log = (out / "training_log.jsonl").read_text().splitlines()
    assert '"world_size": 2' in log[-1]
    assert moved < 2e-5  # the saved checkpoint is the trained model


SIGNALLED_WORKER = textwrap.dedent(
    """
    import json, os, signal, sys, torch
    from unisrec.errors import Stopped
    from unisrec.models.checkpoint import config_from_dict
    from unisrec.models.unisrec import UniSRecConfig
    from unisrec.training import pretrain as pre

    out, *dirs = sys.argv[1:]
    torch.set_num_threads(1)
    rank, calls = int(os.environ["RANK"]), [0]
    original = pre.PretrainTask.step_loss

    def step_loss(self, batch):  # only rank 1 is signalled, during its third step
        calls[0] += 1
        if rank == 1 and calls[0] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, batch)

    pre.PretrainTask.step_loss = step_loss
    cfg = pre.PretrainConfig(epochs=50, batch_size=64, lr=3e-3, device="cpu", save_every=0)
    try:
        pre.pretrain(dirs, out, cfg, config_from_dict(UniSRecConfig, NO_NOISE), show_progress=False)
    except Stopped as exc:
        json.dump({"steps": calls[0], "exit_code": exc.exit_code}, open(f"{out}/stopped{rank}.json", "w"))
    """
)


def test_a_signal_to_one_rank_stops_every_rank_at_the_same_step_with_one_resume_state(domains, tmp_path):
    """Otherwise the signalled rank would leave the others waiting in their next all-reduce."""
    import json

    from unisrec.training.state import read_run_state

    out = torchrun_two(SIGNALLED_WORKER, tmp_path, domains)
    stopped = [json.loads((out / f"stopped{r}.json").read_text()) for r in (0, 1)]
    assert stopped[0] == stopped[1] == {"steps": 3, "exit_code": 143}  # rank 0 was told by the all-reduce
    assert read_run_state(out).global_step == 3 and not (out / "done.json").exists()
