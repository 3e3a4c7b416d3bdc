"""Multi-domain pre-training of UniSRec (SPEC "Pre-training", Eq. 8-10), single- or multi-process.

One step:
  1. a global batch of training prefixes from all domains (``GlobalBatchSampler``), this rank's
     slice of it, and each sequence's augmented view (item drop / word drop, ``data.augment``);
  2. the batch's *unique* items (histories, views and targets) are adapted once by the MoE adaptor
     (Eq. 2-5) and gathered -- the release adapts every position of every sequence;
  3. both views are encoded in one Transformer call (Eq. 6-7);
  4. L = L_S-I + lambda * L_S-S (Eq. 8-10, ``training.losses``), with candidates gathered from
     every rank (``training.distributed``).

Differences from the authors' release, on purpose:
  * adapting unique items once means one dropout / gate-noise draw per item per step, not one per
    occurrence;
  * false negatives are removed from the softmax (not set to logit 0) and losses are log-space;
  * gradients are really all-reduced across processes (DDP's hooks fire: the DDP wrapper's
    ``forward`` computes the loss);
  * CPU default batch size 1,024 (the release uses 8,192 on 4 GPUs); ``--batch-size 8192`` restores it.

Output directory (``--output``)::

    config.json, model.safetensors   UniSRec.save_pretrained: what `unisrec finetune --from` reads
    training_log.jsonl               one line per epoch: losses, seconds, sequences/s
    resume/state.json, resume/optimizer.safetensors, resume/rng.safetensors   for --resume
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from unisrec.data.multidomain import MultiDomainCorpus
from unisrec.errors import UserError
from unisrec.models.unisrec import UniSRec, UniSRecConfig
from unisrec.training.pretrain_config import PretrainConfig
from unisrec.training.distributed import (
    DistContext,
    GlobalBatchSampler,
    gather_no_grad,
    gather_with_grad,
    init_distributed,
    shutdown_distributed,
)
from unisrec.training.losses import (
    pretraining_loss,
    sequence_item_contrastive_loss,
    sequence_sequence_contrastive_loss,
)

LOG_NAME = "training_log.jsonl"
RESUME_DIR = "resume"


def unique_items(items: torch.Tensor, table_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sorted distinct indices, position of each input in them), like ``torch.unique(...,
    return_inverse=True)`` but by marking a table-sized mask instead of sorting every index: a
    batch holds ~100K indices into a table of a few 10K rows."""
    present = torch.zeros(table_size, dtype=torch.bool, device=items.device)
    present[items] = True
    unique = present.nonzero().squeeze(1)
    slot = torch.cumsum(present, 0) - 1
    return unique, slot[items]


def last_position_representation(model: UniSRec, seqs: torch.Tensor, lengths: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Eq. (6)-(7) read at the last real position, computing the *final* layer only there.

    ``SequenceEncoder.forward`` runs every layer at every position and then keeps one output per
    sequence. The final layer's keys and values need every position, but its query, output
    projection, residual, LayerNorms and feed-forward are needed at the last position only, so
    this computes them for one row per sequence -- the same function (a test checks it) at about
    two thirds of the Transformer's cost. Earlier layers run in full (later positions' keys depend
    on them).
    """
    import torch.nn.functional as F

    from unisrec.models.encoder import causal_padding_mask

    enc = model.encoder
    b, l = seqs.shape
    x = table[seqs] + enc.position_embedding.weight[:l].unsqueeze(0)
    x = enc.dropout(enc.norm(x))
    if len(enc.layers) > 1:
        mask = causal_padding_mask(lengths, l)
        for layer in enc.layers[:-1]:
            x = layer(x, mask)
    last = enc.layers[-1]
    att = last.attention
    h = att.n_heads
    d = x.shape[-1]
    rows = torch.arange(b, device=x.device)
    x_last = x[rows, lengths - 1]  # (B, d)
    q = att.query(x_last).view(b, 1, h, d // h).transpose(1, 2)
    k = att.key(x).view(b, l, h, d // h).transpose(1, 2)
    v = att.value(x).view(b, l, h, d // h).transpose(1, 2)
    # the last real position attends every real position (causal + padding mask, one query row)
    key_mask = (torch.arange(l, device=x.device)[None, :] < lengths[:, None]).view(b, 1, 1, l)
    ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=att.attn_dropout if att.training else 0.0)
    ctx = ctx.transpose(1, 2).reshape(b, d)
    out = att.norm(att.out_dropout(att.dense(ctx)) + x_last)
    return last.ffn(out)


def encode_by_length(model: UniSRec, seqs: torch.Tensor, lengths: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Sequence representations (Eq. 6-7) of (N, L) left-aligned histories, encoded in groups of
    similar length (1, 2, 3-4, 5-8, ..., 33-64), each trimmed to its own longest history.

    The encoder is causal and read at the last real position, so trailing padding never changes a
    representation: this is the same function as one padded call (a test checks it), but most
    training prefixes are short (Games: mean 7, Scientific: 4) and a batch padded to its longest
    history (usually 50) wastes most of the Transformer's work. Within a group padding is < 2x.
    """
    group = torch.ceil(torch.log2(lengths.clamp(min=1).float())).long()
    order = torch.argsort(group, stable=True)
    counts = torch.bincount(group[order]).tolist()
    parts = []
    for idx in torch.split(order, [c for c in counts]):
        if idx.numel() == 0:
            continue
        ln = lengths[idx]
        parts.append(last_position_representation(model, seqs[idx, : int(ln.max())], ln, table))
    out = torch.cat(parts)
    return out[torch.argsort(order)]  # back to the input order


class PretrainObjective(nn.Module):
    """UniSRec + the pre-training loss as one module, so ``DistributedDataParallel(objective)``
    sees the whole step in its ``forward`` and synchronises every gradient."""

    def __init__(self, model: UniSRec, lambda_ss: float, temperature: float):
        super().__init__()
        self.model = model
        self.lambda_ss = lambda_ss
        self.temperature = temperature

    def forward(
        self,
        history: torch.Tensor,
        lengths: torch.Tensor,
        aug_history: torch.Tensor,
        aug_lengths: torch.Tensor,
        targets: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, l = history.shape
        # both views in one encoder call: pad the shorter window
        seqs = torch.zeros(2 * b, l, dtype=torch.long, device=history.device)
        seqs[:b] = history
        seqs[b:, : aug_history.shape[1]] = aug_history
        all_items = torch.cat([seqs.flatten(), targets])
        unique, inverse = unique_items(all_items, self.model.item_features.shape[0])
        table = self.model.item_representations(unique)  # adapt each distinct item once (Eq. 2-5)
        seq_local = inverse[: seqs.numel()].view(2 * b, l)
        target_local = inverse[seqs.numel() :]
        reps = encode_by_length(self.model, seq_local, torch.cat([lengths, aug_lengths]), table)
        seq_repr, aug_repr = reps[:b], reps[b:]
        target_repr = table[target_local]
        # candidates of every rank (identity in one process); positives are our rows of the gathered list
        cand_targets = gather_no_grad(targets)
        cand_items = gather_with_grad(target_repr)
        cand_views = gather_with_grad(aug_repr)
        rank = torch.distributed.get_rank() if cand_targets.shape[0] != b else 0  # gathered => distributed
        positive = torch.arange(b, device=targets.device) + rank * b
        loss_si = sequence_item_contrastive_loss(seq_repr, cand_items, targets, cand_targets, positive, self.temperature)
        loss_ss = sequence_sequence_contrastive_loss(seq_repr, cand_views, targets, cand_targets, positive, self.temperature)
        return pretraining_loss(loss_si, loss_ss, self.lambda_ss), loss_si.detach(), loss_ss.detach()


# --------------------------------------------------------------------------- checkpoints
def _optimizer_to_safetensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"state.{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_safetensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = v
    for key, v in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _rng_states(ctx: DistContext) -> torch.Tensor:
    """(world, n) uint8: every rank's torch RNG state (CPU, plus CUDA on GPUs), gathered to all."""
    parts = [torch.get_rng_state()]
    if ctx.device.type == "cuda":
        parts.append(torch.cuda.get_rng_state(ctx.device))
    mine = torch.cat(parts).to(ctx.device if ctx.device.type == "cuda" else "cpu")
    return gather_no_grad(mine.unsqueeze(0)).cpu()


def _set_rng_state(ctx: DistContext, states: torch.Tensor) -> None:
    if states.shape[0] != ctx.world_size:
        # a different number of processes than the run that saved: derive fresh, distinct streams
        torch.manual_seed(int(states[0, :8].sum()) + 7919 * ctx.rank)
        return
    mine = states[ctx.rank]
    n_cpu = torch.get_rng_state().numel()
    torch.set_rng_state(mine[:n_cpu].clone())
    if ctx.device.type == "cuda" and mine.numel() > n_cpu:
        torch.cuda.set_rng_state(mine[n_cpu:].clone(), ctx.device)


def save_checkpoint(
    output: Path, model: UniSRec, opt: torch.optim.Optimizer, rng: torch.Tensor, state: dict[str, Any], extra: dict[str, Any]
) -> None:
    """Weights + config (the layout ``finetune --from`` reads) and the resume state; rank 0 only.
    Each file is written to a temporary name and renamed, so a crash never leaves a torn file."""
    from safetensors.torch import save_file

    output.mkdir(parents=True, exist_ok=True)
    tmp = output / f".tmp-{os.getpid()}"
    model.save_pretrained(tmp, extra)
    resume = output / RESUME_DIR
    resume.mkdir(exist_ok=True)
    tensors, meta = _optimizer_to_safetensors(opt)
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    save_file({"torch_rng": rng.contiguous()}, str(tmp / "rng.safetensors"))
    (tmp / "state.json").write_text(json.dumps({**state, "optimizer": meta}, indent=2, sort_keys=True) + "\n")
    for name in ("optimizer.safetensors", "rng.safetensors", "state.json"):
        os.replace(tmp / name, resume / name)
    for name in ("model.safetensors", "config.json"):
        os.replace(tmp / name, output / name)
    tmp.rmdir()


def load_resume_state(output: Path) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, Any]]:
    from safetensors.torch import load_file

    resume = output / RESUME_DIR
    if not (resume / "state.json").is_file():
        raise UserError(f"--resume: {output} has no {RESUME_DIR}/state.json; it holds no pre-training checkpoint to continue")
    state = json.loads((resume / "state.json").read_text())
    return load_file(str(resume / "optimizer.safetensors")), load_file(str(resume / "rng.safetensors"))["torch_rng"], state


# --------------------------------------------------------------------------- training
def pretrain(
    dataset_dirs: list[str | os.PathLike],
    output: str | os.PathLike,
    config: PretrainConfig | None = None,
    model_config: UniSRecConfig | None = None,
    show_progress: bool = True,
) -> tuple[UniSRec, dict[str, Any]]:
    """Pre-train on the training prefixes of every dataset in ``dataset_dirs``; returns (model, summary).

    Runs on every process of a torchrun launch; only rank 0 writes files and logs. ``model_config``
    overrides model hyper-parameters (text_dim is taken from the features, mode is inductive).
    """
    cfg = config or PretrainConfig()
    cfg.validate()
    ctx = init_distributed(cfg.device)
    try:
        return _pretrain(ctx, [Path(p) for p in dataset_dirs], Path(output), cfg, model_config, show_progress)
    finally:
        shutdown_distributed(ctx)


def _pretrain(
    ctx: DistContext, dirs: list[Path], output: Path, cfg: PretrainConfig, model_config: UniSRecConfig | None, show_progress: bool
) -> tuple[UniSRec, dict[str, Any]]:
    from tqdm import tqdm

    if cfg.batch_size % ctx.world_size:
        raise UserError(f"--batch-size {cfg.batch_size} is not a multiple of the {ctx.world_size} processes")
    corpus = MultiDomainCorpus.from_dirs(dirs, feature_name=cfg.features, max_history=cfg.max_history, all_positions=cfg.all_positions)
    mcfg = asdict(model_config) if model_config is not None else {}
    if cfg.init_from and not cfg.resume:  # the architecture of the checkpoint we start from
        if not (Path(cfg.init_from) / "config.json").is_file():
            raise UserError(f"--init-from {cfg.init_from}: no config.json; expected a `unisrec pretrain` output directory")
        mcfg = json.loads((Path(cfg.init_from) / "config.json").read_text())["model"]
    if cfg.resume and (output / "config.json").is_file():  # continue the architecture that was saved
        mcfg = json.loads((output / "config.json").read_text())["model"]
    mcfg.update(text_dim=corpus.text_dim, mode="inductive", num_items=0, temperature=cfg.temperature, max_seq_length=max(cfg.max_history, mcfg.get("max_seq_length", 0)))
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = UniSRec(UniSRecConfig(**mcfg))
    model.set_item_features(corpus.feature_table)
    model.to(ctx.device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sampler = GlobalBatchSampler(len(corpus), cfg.batch_size, cfg.seed, ctx.world_size, ctx.rank)
    if len(sampler) == 0:
        raise UserError(f"{len(corpus)} training sequences are fewer than the {ctx.world_size} processes")

    if cfg.init_from and not cfg.resume:
        init = UniSRec.from_pretrained(cfg.init_from)
        if init.config.text_dim != model.config.text_dim:
            raise UserError(f"--init-from {cfg.init_from}: text_dim {init.config.text_dim} != these features' {model.config.text_dim}")
        model.load_state_dict(init.state_dict(), strict=False)
    epoch, start_step, global_step = 0, 0, 0
    torch.manual_seed(cfg.seed + 1000003 * ctx.rank)  # distinct dropout / gate noise per rank
    if cfg.resume:
        from safetensors.torch import load_file

        opt_tensors, rng, state = load_resume_state(output)
        model.load_state_dict(load_file(str(output / "model.safetensors")), strict=False)
        _optimizer_from_safetensors(opt, opt_tensors, state["optimizer"])
        _set_rng_state(ctx, rng)
        epoch, start_step, global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
        if start_step >= len(sampler):
            epoch, start_step = epoch + 1, 0
        if ctx.is_main:
            print(f"resuming from {output}: epoch {epoch + 1}, step {global_step}")
    elif ctx.is_main and (output / LOG_NAME).exists():
        (output / LOG_NAME).unlink()  # a fresh run starts a fresh log

    objective: nn.Module = PretrainObjective(model, cfg.lambda_ss, cfg.temperature)
    if ctx.distributed:
        # the feature table is a constant buffer: never re-broadcast it each step
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        # (w_noise is unused when noisy gating is off)
        with warnings.catch_warnings():  # newer torch renames broadcast_buffers; the old name works on all
            warnings.simplefilter("ignore", FutureWarning)
            objective = nn.parallel.DistributedDataParallel(
                objective, device_ids=ids, broadcast_buffers=False, find_unused_parameters=not model.config.noisy_gating
            )

    extra = {
        "pretraining": {
            "config": asdict(cfg),
            "domains": corpus.describe(),
            "num_sequences": len(corpus),
            "world_size": ctx.world_size,
        },
        "encoder": corpus.encoder_info,
    }
    if ctx.is_main:
        output.mkdir(parents=True, exist_ok=True)
        print(
            f"pre-training on {len(corpus):,} sequences from {len(corpus.domains)} domain(s), {corpus.num_items:,} items; "
            f"{len(sampler)} steps/epoch of {cfg.batch_size} on {ctx.world_size} x {ctx.device}"
        )

    def checkpoint(ep: int, step_in_epoch: int) -> None:
        rng = _rng_states(ctx)  # collective: every rank takes part
        if ctx.is_main:
            extra["pretraining"]["epochs_done"] = ep + (step_in_epoch / len(sampler))
            extra["pretraining"]["global_step"] = global_step
            state = {"epoch": ep, "step_in_epoch": step_in_epoch, "global_step": global_step, "world_size": ctx.world_size}
            save_checkpoint(output, model, opt, rng, state, extra)
        if ctx.distributed:
            torch.distributed.barrier()

    history: list[dict[str, Any]] = []
    t_start, first_step = time.perf_counter(), global_step
    stop = False
    last_loss = float("nan")
    objective.train()
    while epoch < cfg.epochs and not stop:
        t0 = time.perf_counter()
        sums = torch.zeros(4, dtype=torch.float64)  # loss, si, ss, sequences
        bar = tqdm(
            total=len(sampler), initial=start_step, desc=f"pretrain epoch {epoch + 1}/{cfg.epochs}",
            disable=not (ctx.is_main and show_progress), leave=False, dynamic_ncols=True,
        )
        step = start_step
        for step, rows, local in sampler.epoch_batches(epoch, start_step):
            out_of_time = (  # at least one step per run, so a resumed run always progresses
                cfg.time_limit_minutes > 0 and global_step > first_step and time.perf_counter() - t_start >= 60 * cfg.time_limit_minutes
            )
            if ctx.distributed and cfg.time_limit_minutes:  # every rank must stop at the same step
                flag = torch.tensor([float(bool(out_of_time))], device=ctx.device)
                torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
                out_of_time = bool(flag.item())
            if (cfg.max_steps and global_step >= cfg.max_steps) or out_of_time:
                stop = True
                break
            rng = np.random.default_rng([cfg.seed, epoch, step, 1])  # augmentation: same for any world size
            batch = corpus.batch(rows, rng, cfg.item_drop_prob, cfg.drop_prob)
            tensors = {}
            for k in ("history", "lengths", "aug_history", "aug_lengths", "targets"):
                tensors[k] = torch.from_numpy(batch[k][local]).to(ctx.device, non_blocking=True)
            # left-aligned windows: trim trailing all-padding columns of this rank's slice
            tensors["history"] = tensors["history"][:, : max(1, int(tensors["lengths"].max()))]
            tensors["aug_history"] = tensors["aug_history"][:, : max(1, int(tensors["aug_lengths"].max()))]
            loss, loss_si, loss_ss = objective(**tensors)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            global_step += 1
            last_loss = float(loss.detach())
            if not math.isfinite(last_loss):
                raise RuntimeError(f"pre-training loss became {last_loss} at step {global_step}; lower --lr")
            n = len(rows)
            sums += torch.tensor([last_loss * n, float(loss_si) * n, float(loss_ss) * n, n], dtype=torch.float64)
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.4f}")
        else:
            step = len(sampler)
        bar.close()
        done_steps = step - start_step
        seconds = time.perf_counter() - t0
        if ctx.distributed:
            # every rank saw the same global row count; average the per-rank mean losses
            t = sums.clone()
            torch.distributed.all_reduce(t)
            sums = torch.cat([t[:3] / ctx.world_size, sums[3:]])
        full_epoch = step >= len(sampler)
        if done_steps > 0 and ctx.is_main:
            n = float(sums[3])
            rec = {
                "epoch": epoch + 1,
                "step": global_step,
                "loss": float(sums[0]) / n,
                "loss_si": float(sums[1]) / n,
                "loss_ss": float(sums[2]) / n,
                "seconds": round(seconds, 3),
                "sequences_per_s": round(n / seconds, 1),
                "sequences": int(n),
                "partial": not full_epoch,
                "world_size": ctx.world_size,
            }
            history.append(rec)
            with open(output / LOG_NAME, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
            print(
                f"epoch {epoch + 1}: loss {rec['loss']:.4f} (S-I {rec['loss_si']:.4f}, S-S {rec['loss_ss']:.4f}) "
                f"{seconds:.1f}s, {rec['sequences_per_s']:.0f} seq/s"
            )
        if not full_epoch:  # stopped by max_steps inside the epoch: resume continues here
            checkpoint(epoch, step)
            break
        epoch, start_step = epoch + 1, 0
        if cfg.max_steps and global_step >= cfg.max_steps:
            stop = True
        if stop or epoch >= cfg.epochs or (cfg.save_every > 0 and epoch % cfg.save_every == 0):
            checkpoint(epoch, 0)
    summary = {"global_step": global_step, "epochs": history, "last_loss": last_loss, "output": str(output)}
    return model, summary
