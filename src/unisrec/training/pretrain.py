"""Multi-domain pre-training of UniSRec (docs/protocol.md "Pre-training", Eq. 8-10), single- or multi-process.

One step:
  1. a global batch of training prefixes from all domains (``GlobalBatchSampler``), this rank's
     slice of it, and each sequence's augmented view (item drop / word drop, ``data.augment``);
  2. the batch's *unique* items (histories, views and targets) are adapted once by the MoE adaptor
     (Eq. 2-5) and gathered -- the release adapts every position of every sequence;
  3. both views are encoded in one Transformer call (Eq. 6-7);
  4. L = L_S-I + lambda * L_S-S (Eq. 8-10, ``training.losses``), with candidates gathered from
     every rank (``training.distributed``); ``lambda_si`` / ``lambda_ss`` = 0 leave a task out
     entirely (the ablations of docs/analyses.md).

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
    resume/                          the exact resume state (``training.state``)
    done.json                        written when the run ends (its epochs, steps or time cap):
                                     why it stopped, epochs and steps done, the last loss; a
                                     checkpoint without it is still training or was cut off
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from unisrec.data.dataset import write_json
from unisrec.data.multidomain import MultiDomainCorpus
from unisrec.errors import UserError
from unisrec.models.encoder import encoder_passes
from unisrec.models.unisrec import UniSRec, UniSRecConfig
from unisrec.training.config import PretrainConfig
from unisrec.training.distributed import (
    DistContext,
    GlobalBatchSampler,
    gather_no_grad,
    gather_with_grad,
    init_distributed,
    shutdown_distributed,
)
from unisrec.training.log import RunLog
from unisrec.training.loop import LoopSettings, train_loop
from unisrec.training.losses import (
    pretraining_loss,
    sequence_item_contrastive_loss,
    sequence_sequence_contrastive_loss,
)
from unisrec.training.state import DONE_NAME, RunState, holds_output_lock, read_run_state, restore_run_state


def unique_items(items: torch.Tensor, table_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sorted distinct indices, position of each input in them), like ``torch.unique(...,
    return_inverse=True)`` but by marking a table-sized mask instead of sorting every index: a
    batch holds ~100K indices into a table of a few 10K rows."""
    present = torch.zeros(table_size, dtype=torch.bool, device=items.device)
    present[items] = True
    unique = present.nonzero().squeeze(1)
    slot = torch.cumsum(present, 0) - 1
    return unique, slot[items]


def encode_by_length(model: UniSRec, seqs: torch.Tensor, lengths: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Sequence representations (Eq. 6-7) of (N, L) left-aligned histories, encoded in length
    buckets on a CPU, each trimmed to its own longest history, in one padded pass on a GPU
    (``models.encoder.encoder_passes``), with the final layer computed at the last position only
    (``SequenceEncoder.forward_last``).

    The encoder is causal and read at the last real position, so trailing padding never changes a
    representation: the same function as one padded call (a test checks it), at a fraction of the
    cost -- most training prefixes are short (Games: mean 7, Scientific: 4).
    """
    buckets = encoder_passes(lengths.cpu().numpy(), seqs.device)
    order = torch.from_numpy(np.concatenate(buckets)).to(seqs.device)
    parts = []
    for idx in buckets:
        i = torch.from_numpy(idx).to(seqs.device)
        ln = lengths[i]
        parts.append(model.encoder.forward_last(table[seqs[i, : int(ln.max())]], ln))
    return torch.cat(parts)[torch.argsort(order)]  # back to the input order


class PretrainObjective(nn.Module):
    """UniSRec + the pre-training loss as one module, so ``DistributedDataParallel(objective)``
    sees the whole step in its ``forward`` and synchronises every gradient.

    ``lambda_si`` / ``lambda_ss`` weight Eq. (10); a task whose weight is 0 (the ablations "w/o S-I"
    and "w/o S-S", docs/analyses.md) is not computed: with ``lambda_ss = 0`` the augmented views are
    neither adapted nor encoded (half the encoder work), with ``lambda_si = 0`` no sequence-item
    logits are formed. ``forward`` returns (loss, {task name: detached loss}) for the computed tasks.
    """

    def __init__(self, model: UniSRec, lambda_ss: float, temperature: float, lambda_si: float = 1.0):
        super().__init__()
        self.model = model
        self.lambda_ss = lambda_ss
        self.lambda_si = lambda_si
        self.temperature = temperature

    @property
    def task_names(self) -> tuple[str, ...]:
        """The log keys of the tasks this objective computes, in ``forward``'s order."""
        return tuple(name for name, w in (("loss_si", self.lambda_si), ("loss_ss", self.lambda_ss)) if w != 0)

    def forward(
        self,
        history: torch.Tensor,
        lengths: torch.Tensor,
        aug_history: torch.Tensor,
        aug_lengths: torch.Tensor,
        targets: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        b, l = history.shape
        with_views = self.lambda_ss != 0
        if with_views:  # both views in one encoder call: pad the shorter window
            seqs = torch.zeros(2 * b, l, dtype=torch.long, device=history.device)
            seqs[:b] = history
            seqs[b:, : aug_history.shape[1]] = aug_history
            seq_lengths = torch.cat([lengths, aug_lengths])
        else:
            seqs, seq_lengths = history, lengths
        all_items = torch.cat([seqs.flatten(), targets])
        unique, inverse = unique_items(all_items, self.model.item_features.shape[0])
        table = self.model.item_representations(unique)  # adapt each distinct item once (Eq. 2-5)
        seq_local = inverse[: seqs.numel()].view(seqs.shape[0], l)
        target_local = inverse[seqs.numel() :]
        reps = encode_by_length(self.model, seq_local, seq_lengths, table)
        seq_repr = reps[:b]
        # candidates of every rank (identity in one process); positives are our rows of the gathered list
        cand_targets = gather_no_grad(targets)
        rank = torch.distributed.get_rank() if cand_targets.shape[0] != b else 0  # gathered => distributed
        positive = torch.arange(b, device=targets.device) + rank * b
        loss_si = loss_ss = None
        if self.lambda_si != 0:
            cand_items = gather_with_grad(table[target_local])
            loss_si = sequence_item_contrastive_loss(seq_repr, cand_items, targets, cand_targets, positive, self.temperature)
        if with_views:
            cand_views = gather_with_grad(reps[b:])
            loss_ss = sequence_sequence_contrastive_loss(seq_repr, cand_views, targets, cand_targets, positive, self.temperature)
        parts = {name: loss.detach() for name, loss in (("loss_si", loss_si), ("loss_ss", loss_ss)) if loss is not None}
        return pretraining_loss(loss_si, loss_ss, self.lambda_ss, self.lambda_si), parts


class PretrainTask:
    """What the epoch loop needs from pre-training: global batches + the contrastive step."""

    unit = "sequences"

    def __init__(self, corpus: MultiDomainCorpus, objective: nn.Module, sampler: GlobalBatchSampler, cfg: PretrainConfig,
                 ctx: DistContext, export: Any):
        self.corpus, self.objective, self.sampler, self.cfg, self.ctx, self.export = corpus, objective, sampler, cfg, ctx, export
        # the per-task losses logged beside the total: only the tasks computed (a 0 weight skips one)
        self.extra_names = tuple(n for n, w in (("loss_si", cfg.lambda_si), ("loss_ss", cfg.lambda_ss)) if w != 0)
        self.current_epoch, self.last_loss = 1, float("nan")

    def batches(self, epoch: int) -> list[tuple[int, np.ndarray, slice]]:
        self.objective.train()
        self.current_epoch = epoch
        return list(self.sampler.epoch_batches(epoch - 1))

    def step_loss(self, batch: tuple[int, np.ndarray, slice]) -> tuple[torch.Tensor, int, dict[str, torch.Tensor]]:
        step, rows, local = batch
        epoch = self.current_epoch
        rng = np.random.default_rng([self.cfg.seed, epoch - 1, step, 1])  # augmentation: same for any world size
        data = self.corpus.batch(rows, rng, self.cfg.item_drop_prob, self.cfg.drop_prob)
        t = {k: torch.from_numpy(data[k][local]).to(self.ctx.device, non_blocking=True)
             for k in ("history", "lengths", "aug_history", "aug_lengths", "targets")}
        # left-aligned windows: trim trailing all-padding columns of this rank's slice
        t["history"] = t["history"][:, : max(1, int(t["lengths"].max()))]
        t["aug_history"] = t["aug_history"][:, : max(1, int(t["aug_lengths"].max()))]
        loss, parts = self.objective(**t)
        self.last_loss = float(loss.detach())
        return loss, len(rows), {name: parts[name] for name in self.extra_names}

    def validate(self) -> None:
        return None

    def checkpointed(self, run: RunState) -> None:
        self.export(run)


def build_model(cfg: PretrainConfig, corpus: MultiDomainCorpus, output: Path, model_config: UniSRecConfig | None) -> UniSRec:
    """The model to pre-train: ``model_config``, or the architecture of --init-from / of the run resumed."""
    from unisrec.models.checkpoint import config_from_dict
    from unisrec.models.model_dir import read_model_config

    mcfg = asdict(model_config) if model_config is not None else {}
    if cfg.init_from and not cfg.resume:  # the architecture of the checkpoint we start from
        if not (Path(cfg.init_from) / "config.json").is_file():
            raise UserError(f"--init-from {cfg.init_from}: no config.json; expected a `unisrec pretrain` output directory")
        mcfg = read_model_config(cfg.init_from)["model"]
    if cfg.resume and (output / "config.json").is_file():  # continue the architecture that was saved
        mcfg = read_model_config(output)["model"]
    base = config_from_dict(UniSRecConfig, mcfg)
    base.encoder.max_seq_length = max(cfg.max_history, base.encoder.max_seq_length)
    config = dataclasses.replace(base, text_dim=corpus.text_dim, mode="inductive", num_items=0, temperature=cfg.temperature)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = UniSRec(config)
    model.set_item_features(corpus.feature_table)
    if cfg.init_from and not cfg.resume:
        init = UniSRec.from_pretrained(cfg.init_from)
        if init.config.text_dim != model.config.text_dim:
            raise UserError(f"--init-from {cfg.init_from}: text_dim {init.config.text_dim} != these features' {model.config.text_dim}")
        model.load_state_dict(init.state_dict(), strict=False)
    return model


def wrap_for_processes(model: UniSRec, cfg: PretrainConfig, ctx: DistContext) -> nn.Module:
    """The objective module the loop calls, DDP-wrapped in a multi-process run."""
    objective: nn.Module = PretrainObjective(model, cfg.lambda_ss, cfg.temperature, cfg.lambda_si)
    if not ctx.distributed:
        return objective
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    with warnings.catch_warnings():  # newer torch renames broadcast_buffers; the old name works on all
        warnings.simplefilter("ignore", FutureWarning)
        # the feature table is a constant buffer: never re-broadcast it each step (w_noise is unused
        # when noisy gating is off)
        return nn.parallel.DistributedDataParallel(
            objective, device_ids=ids, broadcast_buffers=False, find_unused_parameters=not model.config.noisy_gating
        )


def sets_architecture(option_names: Iterable[str]) -> bool:
    """Whether options name a UniSRec architecture field: then `unisrec pretrain` (and a ``model:
    pretrain`` benchmark cell) builds that architecture, else the default sized to the features.
    ``mode`` (pre-training is inductive) and ``temperature`` (a ``PretrainConfig`` field too) do not count."""
    from unisrec.config import option_fields

    fields = option_fields(UniSRecConfig)
    return any(n in fields and n not in ("mode", "temperature") for n in option_names)


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
        return _pretrain(ctx, [Path(p) for p in dataset_dirs], Path(output), cfg, model_config, show_progress and cfg.progress)
    finally:
        shutdown_distributed(ctx)


@holds_output_lock
def _pretrain(ctx: DistContext, dirs: list[Path], output: Path, cfg: PretrainConfig, model_config: UniSRecConfig | None,
              show_progress: bool) -> tuple[UniSRec, dict[str, Any]]:
    if cfg.batch_size % ctx.world_size:
        raise UserError(f"--batch-size {cfg.batch_size} is not a multiple of the {ctx.world_size} processes")
    if cfg.resume and read_run_state(output) is None:
        raise UserError(f"--resume: {output} has no resume state; it holds no pre-training checkpoint to continue")
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if cfg.resume and ctx.is_main:
        (output / DONE_NAME).unlink(missing_ok=True)  # it goes on: an earlier sitting's end no longer holds
    corpus = MultiDomainCorpus.from_dirs(dirs, feature_name=cfg.features, max_history=cfg.max_history, all_positions=cfg.all_positions)
    model = build_model(cfg, corpus, output, model_config).to(ctx.device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sampler = GlobalBatchSampler(len(corpus), cfg.batch_size, cfg.seed, ctx.world_size, ctx.rank)
    if len(sampler) == 0:
        raise UserError(f"{len(corpus)} training sequences are fewer than the {ctx.world_size} processes")
    torch.manual_seed(cfg.seed + 1000003 * ctx.rank)  # distinct dropout / gate noise per rank
    run = RunState(config={"pretrain": asdict(cfg)})
    log = RunLog(output, ctx.is_main, show_progress)
    if cfg.resume:
        run, _ = restore_run_state(output, model, opt, ctx)
        log.say(f"resuming from {output}: epoch {run.epoch + 1}, step {run.global_step}")
    elif ctx.is_main:
        output.mkdir(parents=True, exist_ok=True)
    log.start(run.global_step if cfg.resume else None)
    meta = {"pretraining": {"config": asdict(cfg), "domains": corpus.describe(), "num_sequences": len(corpus),
                            "world_size": ctx.world_size}, "encoder": corpus.encoder_info}

    def export(r: RunState) -> None:  # the weights `finetune --from` reads, beside the resume state
        meta["pretraining"].update(epochs_done=r.epoch + r.step_in_epoch / len(sampler), global_step=r.global_step)
        model.save_pretrained(output, meta)

    task = PretrainTask(corpus, wrap_for_processes(model, cfg, ctx), sampler, cfg, ctx, export)
    log.say(f"pre-training on {len(corpus):,} sequences from {len(corpus.domains)} domain(s), {corpus.num_items:,} items; "
            f"{len(sampler)} steps/epoch of {cfg.batch_size} on {ctx.world_size} x {ctx.device}")
    first = run.global_step
    settings = LoopSettings(cfg.epochs, cfg.max_steps, cfg.time_limit_minutes, "step", cfg.save_every, precision=cfg.precision,
                            checkpoint_minutes=cfg.checkpoint_minutes)
    reason, _ = train_loop(task, model, opt, run, settings, ctx, log, output)
    epochs = [r for r in log.records() if r["step"] > first] if ctx.is_main else []
    last = epochs[-1]["loss"] if epochs else float("nan")
    if ctx.is_main:
        write_json(output / DONE_NAME, {"stop_reason": reason, "epochs_done": run.epoch + run.step_in_epoch / len(sampler),
                                        "global_step": run.global_step, "last_epoch_loss": last,
                                        "training_seconds": round(run.elapsed, 1)})
    return model, {"global_step": run.global_step, "epochs": epochs, "last_loss": task.last_loss, "epoch_loss": last, "output": str(output)}
