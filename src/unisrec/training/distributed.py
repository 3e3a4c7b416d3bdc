"""Multi-process training helpers: process-group set-up, a world-size-invariant batch sampler, and
a differentiable all-gather for in-batch contrastive negatives.

Launch: ``torchrun --nproc_per_node N -m unisrec pretrain ...`` (one machine) or
``torchrun --nnodes M --node_rank R --rdzv_endpoint HOST:PORT --nproc_per_node N -m unisrec ...``
(several). torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; we join the group with NCCL on GPUs and
gloo on CPU. The model is wrapped in ``DistributedDataParallel`` and the wrapper's ``forward`` is
what computes the loss, so its gradient hooks all-reduce every gradient -- unlike the authors'
release, which unwraps ``.module`` right after wrapping and so never synchronises gradients.

Negatives: each rank gathers the other ranks' candidate vectors (target items, augmented views)
*with gradient*, so a run on W processes with B rows each optimises exactly the loss of one
process on the global batch of W*B rows with W*B in-batch candidates -- the batch size a user sets
means the same thing whatever the number of processes (the paper's 8,192 negatives).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from unisrec.errors import UserError


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str | None, local_rank: int = 0) -> torch.device:
    """The one device resolver: "auto" (or empty) -> cuda:LOCAL_RANK when CUDA is available, else
    cpu; anything else must be a torch device this machine has ("cuda" -> cuda:LOCAL_RANK)."""
    if not name or name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"--device {name!r} is not a torch device ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{local_rank}")
    if dev.type == "cuda":  # TF32 matmuls: the release's GPUs ran float32; TF32 is within its noise
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return dev


def init_distributed(device: str = "auto") -> DistContext:
    """Join the process group torchrun describes (or one a caller already initialised).

    A plain ``unisrec pretrain`` (no torchrun, WORLD_SIZE unset or 1) runs as a single process.
    """
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
        return DistContext(rank, world, local, resolve_device(device, local), initialized_here=False)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(device=resolve_device(device))
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
    return DistContext(rank, world, local, dev, initialized_here=True)


def shutdown_distributed(ctx: DistContext) -> None:
    if ctx.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 whose backward returns this rank's slice of the *summed* gradient.

    Every rank's loss depends on every rank's candidates, so the gradient of a candidate is the sum
    of the gradients all ranks computed for it: an all_reduce(SUM) of the gathered gradient, then
    our slice. (all_reduce works on both gloo and NCCL; torch's own autograd all_gather needs
    all_to_all on gloo.)
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        world = dist.get_world_size()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = x.shape[0]
        ctx.rank = dist.get_rank()
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (same shape on every rank) from all ranks, rank order, differentiably."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


class GlobalBatchSampler:
    """Shuffled global batches, each split into equal contiguous per-rank slices.

    Epoch ``e`` uses the permutation of ``default_rng([seed, e])``; global batch k is rows
    ``perm[k*B:(k+1)*B]``. The last, short batch is trimmed to a multiple of the world size (at
    most W-1 rows left out per epoch, different ones each epoch) so every rank holds the same
    number of rows -- needed for the gathered negatives and for DDP's gradient mean to equal the
    global mean. The batches are identical for any world size that divides B, which is what makes a
    W-process run comparable to (and testable against) a single-process one.
    """

    def __init__(self, num_examples: int, batch_size: int, seed: int, world_size: int = 1, rank: int = 0):
        if batch_size % world_size:
            raise UserError(f"--batch-size {batch_size} is not a multiple of the {world_size} processes; use a multiple of {world_size}")
        self.num_examples = num_examples
        self.batch_size = batch_size
        self.seed = seed
        self.world_size = world_size
        self.rank = rank

    def __len__(self) -> int:
        full, rest = divmod(self.num_examples, self.batch_size)
        return full + (1 if rest >= self.world_size else 0)

    def local_slice(self, n_global: int) -> slice:
        per = n_global // self.world_size
        return slice(self.rank * per, (self.rank + 1) * per)

    def epoch_batches(self, epoch: int, start_step: int = 0):
        """Yield (step, global row indices, this rank's slice of them) from ``start_step`` on."""
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)
        for step in range(start_step, len(self)):
            rows = perm[step * self.batch_size : (step + 1) * self.batch_size]
            rows = rows[: len(rows) - len(rows) % self.world_size]
            yield step, rows, self.local_slice(len(rows))
