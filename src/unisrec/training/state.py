"""The resumable state of a training run -- weights, optimizer, RNG, progress and early stopping --
written as safetensors + JSON (no pickle) and swapped in with ONE atomic rename.

Layout (``OUTPUT/resume/``)::

    CURRENT                 the name of the complete generation below (replaced atomically)
    gen-000012/state.json   progress (epoch, step, global step, elapsed), early stopping, the run's
                            config, the optimizer's hyper-parameters
    gen-000012/model.safetensors       weights after the last finished step
    gen-000012/best.safetensors        weights of the best validation epoch (supervised runs)
    gen-000012/optimizer.safetensors   the optimizer's tensors (Adam moments, steps), keyed "i.key"
    gen-000012/rng.safetensors         every process's torch RNG state, so dropout continues its stream

A new generation is written completely into a fresh folder, then ``CURRENT`` is replaced (one
``os.replace``), then older generations are removed. A crash at any moment leaves ``CURRENT``
naming a complete generation: resume is exact whatever step of the write was interrupted.

One process trains a run folder at a time: :func:`holds_output_lock` makes every training entry
point hold the folder's writer lock (``unisrec.data.output``) while it runs, so a second trainer of
the same folder (another `unisrec train --resume`, or a benchmark cell started again while an
orphaned worker still trains it) is refused with the holder's pid instead of interleaving its
checkpoints with the first one's.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np
import torch

from unisrec.data.output import writer_lock
from unisrec.errors import UserError
from unisrec.training.distributed import DistContext, gather_no_grad

RESUME_DIR = "resume"
POINTER = "CURRENT"


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA) so a run is repeatable on the same device."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


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


@dataclass
class RunState:
    """Where a run is: what ``--resume`` restores besides the tensors."""

    epoch: int = 0  # epochs fully done
    step_in_epoch: int = 0  # steps done of epoch ``epoch + 1`` (a run stopped mid-epoch)
    global_step: int = 0
    elapsed: float = 0.0  # training seconds over all sittings
    world_size: int = 1
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunState":
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**{**d, "early_stopping": EarlyStopping(**d.get("early_stopping", {}))})


def cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a module's weights (e.g. the best epoch's)."""
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


def capture_rng(ctx: DistContext) -> torch.Tensor:
    """(world, n) uint8: every process's torch RNG state (CPU, plus CUDA on GPUs), gathered to all.
    Collective in a multi-process run: every rank must call it."""
    parts = [torch.get_rng_state()]
    if ctx.device.type == "cuda":
        parts.append(torch.cuda.get_rng_state(ctx.device))
    mine = torch.cat(parts).to(ctx.device if ctx.device.type == "cuda" else "cpu")
    return gather_no_grad(mine.unsqueeze(0)).cpu()


def restore_rng(ctx: DistContext, states: torch.Tensor) -> None:
    if states.shape[0] != ctx.world_size:
        # a different number of processes than the run that saved: derive fresh, distinct streams
        torch.manual_seed(int(states[0, :8].sum()) + 7919 * ctx.rank)
        return
    mine = states[ctx.rank]
    n_cpu = torch.get_rng_state().numel()
    torch.set_rng_state(mine[:n_cpu].clone())
    if ctx.device.type == "cuda" and mine.numel() > n_cpu:
        torch.cuda.set_rng_state(mine[n_cpu:].clone(), ctx.device)


DONE_NAME = "done.json"  # a finished stage / pre-training run: how it ended (absent = still training or cut off)
F = TypeVar("F", bound=Callable[..., Any])


def holds_output_lock(fn: F) -> F:
    """Decorate a training entry point with an ``output`` argument: the call holds that folder's
    writer lock throughout (re-entrant, so an entry point may call another on the same folder).
    Under torchrun only rank 0 takes it -- the ranks of one launch are one trainer."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def locked(*args: Any, **kwargs: Any) -> Any:
        output = signature.bind(*args, **kwargs).arguments["output"]
        if int(os.environ.get("RANK", "0")) != 0:
            return fn(*args, **kwargs)
        with writer_lock(output):
            return fn(*args, **kwargs)

    return locked  # type: ignore[return-value]


def current_generation(output: Path) -> Path | None:
    """The complete generation folder ``CURRENT`` names, or None when the run has none."""
    pointer = Path(output) / RESUME_DIR / POINTER
    if not pointer.is_file():
        return None
    gen = pointer.parent / pointer.read_text().strip()
    if not (gen / "state.json").is_file():
        raise UserError(f"{pointer} names {gen.name}, which is incomplete; the resume state is damaged")
    return gen


def read_run_state(output: str | os.PathLike) -> RunState | None:
    """The progress of the run saved in ``output`` (None if there is none)."""
    gen = current_generation(Path(output))
    if gen is None:
        return None
    try:
        return RunState.from_dict(json.loads((gen / "state.json").read_text()))
    except (ValueError, TypeError) as exc:
        raise UserError(f"{gen / 'state.json'} cannot be read ({exc}); the resume state is damaged") from None


def save_run_state(
    output: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, run: RunState, rng: torch.Tensor,
    best: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write a complete new generation, then swap ``CURRENT`` to it (see the module docstring).

    ``best`` None keeps the previous generation's best weights (hard-linked, not rewritten)."""
    from unisrec.models.checkpoint import save_safetensors as save_file  # the umask's mode, not 0600

    root = Path(output) / RESUME_DIR
    root.mkdir(parents=True, exist_ok=True)
    old = current_generation(output)
    gen = root / f"gen-{run.global_step:09d}-{run.epoch:06d}"
    if gen.exists():  # a leftover of an interrupted write (CURRENT never named it)
        shutil.rmtree(gen)
    gen.mkdir()
    save_file(cpu_state(model), gen / "model.safetensors")
    if best is not None:
        save_file(best, gen / "best.safetensors")
    elif old is not None and (old / "best.safetensors").is_file():
        _link_or_copy(old / "best.safetensors", gen / "best.safetensors")
    opt_tensors, opt_meta = optimizer_to_flat(optimizer)
    save_file(opt_tensors, gen / "optimizer.safetensors")
    save_file({"torch_rng": rng.contiguous()}, gen / "rng.safetensors")
    state = {**asdict(run), "optimizer": opt_meta}
    (gen / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    _fsync_dir(gen)
    tmp = root / f".{POINTER}.tmp"
    tmp.write_text(gen.name + "\n")
    os.replace(tmp, root / POINTER)  # the one atomic step
    _fsync_dir(root)
    for stale in root.glob("gen-*"):
        if stale != gen:
            shutil.rmtree(stale, ignore_errors=True)
    return gen


def restore_run_state(
    output: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, ctx: DistContext
) -> tuple[RunState, dict[str, torch.Tensor] | None]:
    """Load weights, optimizer and RNG of the current generation; returns (progress, best weights or None)."""
    from safetensors.torch import load_file

    gen = current_generation(output)
    if gen is None:
        raise UserError(f"--resume: {output} has no {RESUME_DIR}/{POINTER}; there is no run to continue")
    run = read_run_state(output)
    meta = json.loads((gen / "state.json").read_text())["optimizer"]
    model.load_state_dict(load_file(str(gen / "model.safetensors")), strict=False)
    optimizer_from_flat(optimizer, load_file(str(gen / "optimizer.safetensors"), device=str(ctx.device)), meta)
    restore_rng(ctx, load_file(str(gen / "rng.safetensors"))["torch_rng"])
    best = gen / "best.safetensors"
    return run, (load_file(str(best)) if best.is_file() else None)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _fsync_dir(path: Path) -> None:
    """Flush a folder's entries (and its files) so the rename that follows never outruns them."""
    for f in path.iterdir():
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
