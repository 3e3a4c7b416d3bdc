"""The one epoch loop: pre-training and supervised training (every registered model) both run it.

A *task* supplies the data and the loss; the loop owns everything else -- steps, the optimizer,
non-finite checks, loss averaging across processes, validation + early stopping, time and step
caps, checkpoints (``training.state``) and the per-epoch log (``training.log``). A task has:

* ``unit``: what one example is called in the log ("targets", "sequences");
* ``batches(epoch)``: the epoch's step batches (epoch is 1-based; the same list for the same seed
  and epoch, so a run resumed mid-epoch continues where it stopped);
* ``step_loss(batch) -> (loss, examples, extra scalars to average)``;
* ``validate() -> metrics or None`` after each full epoch (None: no validation, no early stopping);
* ``checkpointed(run)``: called after each checkpoint on the main process (e.g. to export weights).

A SIGTERM or Ctrl-C while the loop runs (:class:`~unisrec.training.signals.StopOnSignal`) lets the
current step finish, writes the resume state and raises :class:`~unisrec.errors.Stopped`: a batch
system's pre-emption or the end of a sitting loses no training, where a kill loses everything since
the last checkpoint.

``LoopSettings.precision = "bfloat16"`` runs each step's forward pass (the task's ``step_loss``) under
``torch.autocast``: matrix products in bfloat16, losses, softmax and normalisation in float32 (autocast's
own op lists); the weights, Adam's state, backward's accumulation into them, validation and test stay
float32. On CPUs with AVX512-BF16 (or AMX) the products run several times faster, on CPUs without them
many times slower (emulated): ``"auto"`` takes bfloat16 only where the device has it natively
(:func:`resolve_precision`; docs/training.md "Precision").

Every ``TRIM_EVERY`` steps, after any step of ``TRIM_AFTER_SECONDS`` or more, and after each validation
the loop hands the heap memory glibc keeps after frees back to the OS (``release_free_heap``), so a long
run's resident set does not creep upwards;
bfloat16 runs on a CPU also cap oneDNN's per-shape kernel cache (``cap_onednn_kernel_cache``).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import functools
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import torch

from unisrec.errors import Stopped, UserError
from unisrec.training.config import Precision
from unisrec.training.distributed import DistContext
from unisrec.training.log import RunLog
from unisrec.training.signals import StopOnSignal
from unisrec.training.state import RunState, capture_rng, cpu_state, save_run_state


@dataclass
class LoopSettings:
    epochs: int
    max_steps: int = 0  # 0 = no cap on optimizer steps
    time_limit_minutes: float = 0.0  # 0 = none
    # "epoch": never start an epoch that would end past the cap; "step": stop at the first step past it
    time_limit_at: Literal["epoch", "step"] = "epoch"
    save_every: int = 1  # checkpoint every N full epochs (and whenever the run stops)
    # also checkpoint inside an epoch once this many minutes of steps passed since the last one (0 = never):
    # a run killed mid-epoch (a sitting that ends) then loses at most that much, not a whole long epoch
    checkpoint_minutes: float = 0.0
    key_metric: str = "ndcg@10"  # early stopping watches this validation metric
    precision: Precision = "float32"  # of the forward pass; weights stay float32


# Steps between two malloc_trim calls: every step costs ~50% more CPU per step (the freed pages are
# faulted back in by the next step), every 10th no measurable time (results/online_retail/memory.md).
TRIM_EVERY = 10
# ...and after any step this long: a pre-training step at batch 8,192 frees gigabytes in tensors of many
# sizes (one per length bucket), and a few such steps between trims held the heap's holes resident.
# Measured (Scientific, batch 8,192, 3 epochs, two runs: results/pretrain/memory_trim.md, memory_trim_run2.md):
# peak RSS -12% / -20%, for +7% / +6% CPU time (re-faulting the freed pages); a run that fits in memory
# beats one that is 6% faster and does not.
TRIM_AFTER_SECONDS = 2.0


def _glibc_malloc_trim():
    """glibc's ``malloc_trim`` (None on other C libraries: macOS, Windows, musl)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _glibc_malloc_trim() if sys.platform.startswith("linux") else None


def release_free_heap() -> None:
    """Give the heap pages that glibc's malloc keeps after frees back to the OS (no-op without glibc).

    Why: with every-position batches every step's tensors differ in size from the last step's, so the
    holes the freed tensors leave in the heap do not fit the next step's and the heap keeps growing
    although nothing is leaked. Measured (Online Retail, UniSRec_t+ID, bfloat16, 2,048 targets per step,
    ``benchmarks/memory_growth_probe.py``): the resident set grew ~7 MB per step (1.43 GB after 20 steps,
    2.01 GB after 100; a whole 34-epoch run peaked at 3.94 GB); with ``malloc_trim(0)`` every 10 steps it
    is back at 0.86-1.04 GB after each trim. Not a change to what is computed."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


# oneDNN (bfloat16 matrix products on CPU) keeps a compiled kernel per input shape, up to 1,024 by default;
# every-position steps come in hundreds of shapes, so the cache alone grows by ~0.4-0.7 GB over a run.
ONEDNN_KERNEL_CACHE = 64


def cap_onednn_kernel_cache(device: torch.device, precision: str) -> None:
    """Default ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` to ``ONEDNN_KERNEL_CACHE`` for bfloat16 runs on a CPU.

    oneDNN reads the variable when it builds its first kernel, so this takes effect when called before
    the run's first bfloat16 product (the loop calls it before its first step); a value the user set is
    kept. Measured (Online Retail, UniSRec_t, two epochs with validation, the capped and the default
    process side by side on the same machine, ``benchmarks/memory_growth_probe.py --onednn-cache``;
    results/online_retail/memory.md): peak RSS 1.73 GB (64) / 1.78 GB (16) vs 2.39 / 2.47 GB, CPU per step
    0.54 / 0.52 s vs 0.56 / 0.53 s -- rebuilding an evicted kernel costs nothing measurable here.
    Float32 products on CPU do not go through this cache, so other runs are left alone."""
    if precision == "bfloat16" and device.type == "cpu":
        os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(ONEDNN_KERNEL_CACHE))


@functools.lru_cache(maxsize=None)
def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 natively: a CUDA GPU that supports it, or a CPU with
    AVX512-BF16 or AMX. Elsewhere oneDNN emulates bfloat16 products: on an AVX2 CPU (AMD EPYC, Zen 2) a
    (4,096 x 300) @ (300 x 3,469) product took 3.86 s under autocast against 0.20 s in float32, 1 thread."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(callable(c) for c in checks):
        return any(c() for c in checks)
    try:  # a torch without those probes: the kernel's view of the CPU (Linux)
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device, say: Any = None) -> str:
    """``precision`` as this run's steps use it: ``auto`` becomes bfloat16 where the device multiplies
    it natively (:func:`native_bfloat16`), else float32. An explicit bfloat16 is kept, with a warning
    through ``say`` where it is emulated (several times slower than float32, not faster)."""
    if precision == "auto":
        return "bfloat16" if native_bfloat16(device) else "float32"
    if precision == "bfloat16" and say is not None and not native_bfloat16(device):
        say(f"warning: bfloat16 on this {device.type} is emulated, not native (no AVX512-BF16 / AMX): its matrix "
            "products run many times slower than float32's; --precision auto picks what the machine does best")
    return precision


def step_precision(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The context a training step's forward pass runs in: autocast to bfloat16, or nothing."""
    if resolve_precision(precision, device) == "bfloat16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass
class EpochResult:
    steps: int
    finished: bool  # all of the epoch's steps are done
    stopped_by: str | None  # "max_steps" / "time_limit" / "signal" when a cap or a signal ended it mid-way
    seconds: float
    sums: torch.Tensor  # float64 [loss * n, extras * n ..., n]


def train_loop(task: Any, model: torch.nn.Module, optimizer: torch.optim.Optimizer, run: RunState,
               settings: LoopSettings, ctx: DistContext, log: RunLog, output: Path) -> tuple[str, dict[str, torch.Tensor] | None]:
    """Run epochs until a stop condition; returns (stop reason, best weights or None)."""
    precision = resolve_precision(settings.precision, ctx.device, log.say)
    if precision != settings.precision:
        log.say(f"precision auto: {precision} on this {ctx.device.type}")
    settings = dataclasses.replace(settings, precision=precision)  # type: ignore[arg-type]
    cap_onednn_kernel_cache(ctx.device, settings.precision)
    t_start, first_step, best = time.perf_counter(), run.global_step, None
    reason = "max_epochs" if run.epoch >= settings.epochs or run.early_stopping.should_stop else ""
    with StopOnSignal() as stop:
        while not reason:
            result = run_epoch(task, optimizer, run, settings, ctx, log, t_start, first_step,
                               lambda r: checkpoint(task, model, optimizer, r, ctx, output, None), stop)
            record = {**epoch_record(task, run, result, ctx), "precision": settings.precision}
            improved = False
            if result.finished:
                run.epoch, run.step_in_epoch = run.epoch + 1, 0
                improved = validate(task, run, settings, record)
                if improved:
                    best = cpu_state(model)
            run.elapsed += result.seconds + record.get("eval_seconds", 0.0)
            if result.steps:
                record["peak_rss_mb"] = peak_rss_mb()
                log.append(record)
                log.say(describe(record, improved))
            reason = stop_reason(run, settings, result, t_start)
            if reason or improved or (settings.save_every > 0 and result.finished and run.epoch % settings.save_every == 0):
                checkpoint(task, model, optimizer, run, ctx, output, best if improved else None)
    if reason == "signal":
        where = f"epoch {run.epoch + 1}, step {run.step_in_epoch}" if run.step_in_epoch else f"the end of epoch {run.epoch}"
        log.say(f"stopped by {signal.Signals(stop.signum).name} at {where} (step {run.global_step}); resume state written")
        raise Stopped(f"stopped at {where}; the resume state is in {output}: run the same command with --resume "
                      "(a benchmark cell: `unisrec benchmark run` again) to continue", stop.signum)
    if reason == "time_limit":
        log.say(f"time limit of {settings.time_limit_minutes} min reached after {run.global_step} steps")
    return reason, best


def run_epoch(task: Any, optimizer: torch.optim.Optimizer, run: RunState, settings: LoopSettings, ctx: DistContext,
              log: RunLog, t_start: float, first_step: int,
              save_mid_epoch: Callable[[RunState], None] | None = None, stop: StopOnSignal | None = None) -> EpochResult:
    """The steps of epoch ``run.epoch + 1`` from ``run.step_in_epoch`` on, until done or capped.

    With ``settings.checkpoint_minutes``, ``save_mid_epoch(state)`` is called between steps once that
    long has passed since the epoch began or the last such call: ``state`` is ``run`` with the
    epoch's seconds so far added to ``elapsed``, so a run resumed from it continues at the next step
    (every task draws each step's randomness from its seed, epoch and step: the continuation is exact)
    and counts its training time. The resumed epoch's log line covers the steps after the resume.
    ``stop``: a signal it recorded ends the epoch before the next step (``stopped_by`` "signal")."""
    epoch = run.epoch + 1
    batches = task.batches(epoch)
    total = len(batches)
    sums: torch.Tensor | None = None
    t0, done, stopped_by = time.perf_counter(), 0, None
    last_save = t0
    bar = log.bar(total, run.step_in_epoch, f"epoch {epoch}")
    for batch in batches[run.step_in_epoch :]:
        stopped_by = step_cap(run, settings, ctx, t_start, first_step, stop)
        if stopped_by:
            break
        t_step = time.perf_counter()
        with step_precision(ctx.device, settings.precision):
            loss, n, extras = task.step_loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise UserError(f"epoch {epoch}, step {run.global_step + 1}: the loss became {value}; lower --lr")
        row = torch.tensor([value * n, *(float(v) * n for v in extras.values()), n], dtype=torch.float64)
        sums = row if sums is None else sums + row
        run.global_step, run.step_in_epoch, done = run.global_step + 1, run.step_in_epoch + 1, done + 1
        if done % TRIM_EVERY == 0 or time.perf_counter() - t_step >= TRIM_AFTER_SECONDS:
            release_free_heap()
        bar.update(1)
        bar.set_postfix(loss=f"{value:.4f}")
        if save_mid_epoch is not None and run.step_in_epoch < total and mid_epoch_checkpoint_due(settings, ctx, last_save):
            save_mid_epoch(dataclasses.replace(run, elapsed=run.elapsed + time.perf_counter() - t0))
            last_save = time.perf_counter()
    bar.close()
    finished = run.step_in_epoch >= total
    if sums is None:  # no step (a signal before the first): the row's shape, [loss, *extras, examples]
        sums = torch.zeros(2 + len(getattr(task, "extra_names", ())), dtype=torch.float64)
    return EpochResult(done, finished, stopped_by, time.perf_counter() - t0, sums)


def mid_epoch_checkpoint_due(settings: LoopSettings, ctx: DistContext, last_save: float) -> bool:
    """Whether ``settings.checkpoint_minutes`` have passed since ``last_save`` (the same answer on every process)."""
    if not settings.checkpoint_minutes:
        return False
    due = time.perf_counter() - last_save >= 60 * settings.checkpoint_minutes
    if ctx.distributed:  # the checkpoint is collective: every rank must take it at the same step
        flag = torch.tensor([float(due)], device=ctx.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        due = bool(flag.item())
    return due


def step_cap(run: RunState, settings: LoopSettings, ctx: DistContext, t_start: float, first_step: int,
             stop: StopOnSignal | None = None) -> str | None:
    """Whether a step cap or a signal stops the run before its next step (the same answer on every
    process: one that received the signal stops them all)."""
    if settings.max_steps and run.global_step >= settings.max_steps:
        return "max_steps"
    # at least one step per sitting, so a resumed run always progresses
    timed_out = (settings.time_limit_at == "step" and bool(settings.time_limit_minutes) and run.global_step > first_step
                 and time.perf_counter() - t_start >= 60 * settings.time_limit_minutes)
    signalled = stop is not None and stop.signum is not None
    if ctx.distributed:  # every rank must stop at the same step
        flags = torch.tensor([float(signalled), float(timed_out)], device=ctx.device)
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        signalled, timed_out = (bool(f) for f in flags.tolist())
        if signalled and stop is not None and stop.signum is None:
            stop.signum = signal.SIGTERM  # another rank's signal: named in this rank's message
    return "signal" if signalled else "time_limit" if timed_out else None


def peak_rss_mb() -> float | None:
    """This process's peak resident memory so far in MB (training and validation), None where unknown."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)  # bytes on macOS, KiB on Linux


def epoch_record(task: Any, run: RunState, result: EpochResult, ctx: DistContext) -> dict[str, Any]:
    """The epoch's log line: mean losses (averaged over processes), seconds, throughput."""
    sums = result.sums
    if ctx.distributed and result.steps:
        total = sums.clone()
        torch.distributed.all_reduce(total)
        sums = torch.cat([total[:-1] / ctx.world_size, sums[-1:]])  # same rows on every rank
    n = float(sums[-1]) or 1.0
    record: dict[str, Any] = {"epoch": run.epoch + 1, "step": run.global_step, "loss": float(sums[0]) / n}
    for i, name in enumerate(getattr(task, "extra_names", ())):
        record[name] = float(sums[1 + i]) / n
    record.update({
        "seconds": round(result.seconds, 3), task.unit: int(sums[-1]),
        f"{task.unit}_per_s": round(float(sums[-1]) / max(result.seconds, 1e-9), 1),
        "partial": not result.finished, "world_size": ctx.world_size,
    })
    return record


def validate(task: Any, run: RunState, settings: LoopSettings, record: dict[str, Any]) -> bool:
    """Validation after a full epoch (if the task has one) and the early-stopping step; True = new best."""
    release_free_heap()  # before the full-ranking pass's large score blocks, and after them
    t0 = time.perf_counter()
    metrics = task.validate()
    release_free_heap()
    if metrics is None:
        return False
    record["valid"], record["eval_seconds"] = metrics, time.perf_counter() - t0
    return run.early_stopping.step(metrics[settings.key_metric], run.epoch)


def stop_reason(run: RunState, settings: LoopSettings, result: EpochResult, t_start: float) -> str:
    """Why the run stops after this epoch ("" = it goes on)."""
    if result.stopped_by:
        return result.stopped_by
    if run.early_stopping.should_stop:
        return "early_stopping"
    if settings.max_steps and run.global_step >= settings.max_steps:
        return "max_steps"
    if run.epoch >= settings.epochs:
        return "max_epochs"
    # stop when the next epoch (assumed as long as this one) would end past the cap, so a capped
    # run finishes inside its budget instead of overrunning it by up to one epoch
    elapsed = time.perf_counter() - t_start
    if settings.time_limit_minutes and settings.time_limit_at == "epoch" and (elapsed + result.seconds) / 60 >= settings.time_limit_minutes:
        return "time_limit"
    return ""


def checkpoint(task: Any, model: torch.nn.Module, optimizer: torch.optim.Optimizer, run: RunState, ctx: DistContext,
               output: Path, best: dict[str, torch.Tensor] | None) -> None:
    rng = capture_rng(ctx)  # collective: every rank takes part
    if ctx.is_main:
        run.world_size = ctx.world_size
        save_run_state(output, model, optimizer, run, rng, best)
        task.checkpointed(run)
    if ctx.distributed:
        torch.distributed.barrier()


def describe(record: dict[str, Any], improved: bool) -> str:
    """One line per epoch for the terminal."""
    parts = [f"epoch {record['epoch']:3d}", f"loss {record['loss']:.4f}"]
    parts += [f"{k} {record[k]:.4f}" for k in ("loss_si", "loss_ss") if k in record]
    if "valid" in record:
        parts.append("valid " + " ".join(f"{k} {v:.4f}" for k, v in record["valid"].items()))
    eval_s = f" (+{record['eval_seconds']:.1f}s eval)" if "eval_seconds" in record else ""
    parts.append(f"{record['seconds']:.1f}s{eval_s}" + ("  *" if improved else "") + ("  (partial)" if record["partial"] else ""))
    return "  ".join(parts)
