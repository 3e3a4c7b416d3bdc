"""Pieces every training loop here shares: seeding, device choice, early stopping, the per-epoch
JSONL log and a resumable state written as safetensors + JSON (no pickle anywhere).

Resume state layout (``OUTPUT/resume/``)::

    state.json              last finished epoch, early-stopping state, optimizer hyper-parameters,
                            the run's config, elapsed seconds
    model.safetensors       weights after the last finished epoch
    best.safetensors        weights of the best validation epoch so far
    optimizer.safetensors   the optimizer's tensors (Adam moments and step counts), keyed "i.key"
    rng.safetensors         torch CPU (and CUDA) random state, so dropout continues its stream
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unisrec.errors import UserError

RESUME_DIR = "resume"


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA) so a run is repeatable on the same device."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(name: str | None) -> torch.device:
    """"auto" (or empty) -> CUDA when available, else CPU; anything else must be a valid torch device."""
    if not name or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"--device {name!r} is not a torch device ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return dev


@dataclass
class EarlyStopping:
    """Stop after ``patience`` evaluations without a strictly better validation value (higher = better)."""

    patience: int = 10
    best: float = float("-inf")
    best_epoch: int = 0
    bad_epochs: int = 0

    def step(self, value: float, epoch: int) -> bool:
        """Record one validation value; True when it is the new best."""
        if value > self.best:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def to_dict(self) -> dict[str, Any]:
        return {"patience": self.patience, "best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _state_to_cpu(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in module.state_dict().items()}


def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into safetensors-able tensors and JSON-able metadata."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"{idx}.{key}"] = val.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, val in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = val
    for idx, st in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(st)
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save_resume_state(
    output: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    best_state: dict[str, torch.Tensor] | None,
    state: dict[str, Any],
) -> None:
    """Write the resume folder; each file is replaced atomically (write to a temp name, rename)."""
    from safetensors.torch import save_file

    d = output / RESUME_DIR
    d.mkdir(parents=True, exist_ok=True)

    def put(name: str, tensors: dict[str, torch.Tensor]) -> None:
        tmp = d / f".{name}.tmp"
        save_file(tensors, str(tmp))
        os.replace(tmp, d / name)

    put("model.safetensors", _state_to_cpu(model))
    if best_state is not None:
        put("best.safetensors", best_state)
    opt_tensors, opt_meta = optimizer_to_flat(optimizer)
    put("optimizer.safetensors", opt_tensors)
    rng = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["torch_cuda"] = torch.cuda.get_rng_state()
    put("rng.safetensors", rng)
    state = dict(state, optimizer=opt_meta)
    tmp = d / ".state.json.tmp"
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, d / "state.json")


def load_resume_state(output: Path) -> dict[str, Any] | None:
    """The JSON state of an interrupted run in ``output``, or None if there is none."""
    f = output / RESUME_DIR / "state.json"
    if not f.is_file():
        return None
    return json.loads(f.read_text())


def restore_resume_state(
    output: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any], device: torch.device
) -> dict[str, torch.Tensor] | None:
    """Load weights, optimizer and RNG from ``output/resume``; returns the best weights (CPU) if saved."""
    from safetensors.torch import load_file

    d = output / RESUME_DIR
    model.load_state_dict(load_file(str(d / "model.safetensors")))
    optimizer_from_flat(optimizer, load_file(str(d / "optimizer.safetensors"), device=str(device)), state["optimizer"])
    rng = load_file(str(d / "rng.safetensors"))
    torch.set_rng_state(rng["torch_cpu"])
    if "torch_cuda" in rng and device.type == "cuda":
        torch.cuda.set_rng_state(rng["torch_cuda"])
    best = d / "best.safetensors"
    return load_file(str(best)) if best.is_file() else None
