"""Supervised training of any registered model on one domain (docs/protocol.md "Fine-tuning").

API::

    train_model("sasrec", dataset_dir, output, TrainConfig(), SASRecConfig()) -> metrics
    fit(model, dataset, TrainConfig(), output)                               -> metrics

Adam, cross-entropy over every item of the domain (padding excluded), full-ranking validation each
epoch, early stopping on valid NDCG@10 (patience 10), the best weights restored for the test split,
a per-epoch JSONL log, an exact resume state, and the model directory written at the end. The
step itself is a batching strategy (``training.batching``); the epoch loop is ``training.loop``.
A model class with a ``pretraining_task`` (S3-Rec) gets its own pre-training stage run to completion
first (:func:`run_pretraining_stage`, OUTPUT/pretrain/); ``TrainConfig.init_from`` starts from another
model directory's weights (:func:`load_init_weights`). A cross-domain model class (RecGURU, CCDR) has a
``joint_task`` and trains on ``TrainConfig.source`` datasets and the target together (``--source DIR``,
:func:`load_sources`); its epochs, validation and early stopping are the target's.

Where this differs from the authors' release in *how* it computes (not what; docs/training.md):
the item table is adapted once per step and gathered, all-item scores are one matmul with the loss
in log-space, and a batch's histories are encoded in length buckets, each padded to its own
longest (the release pads every history to 50; Scientific's mean is ~7).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unisrec.errors import UserError
from unisrec.training.batching import STRATEGIES
from unisrec.training.config import TrainConfig
from unisrec.training.distributed import DistContext, resolve_device
from unisrec.training.log import RunLog
from unisrec.training.loop import LoopSettings, peak_rss_mb, train_loop
from unisrec.training.state import (DONE_NAME, EarlyStopping, RunState, holds_output_lock, read_run_state,
                                    restore_run_state, seed_everything)


@dataclass
class SupervisedTask:
    """What the epoch loop needs from a supervised run: a batching strategy's steps + validation."""

    model: Any
    dataset: Any
    config: TrainConfig
    device: torch.device
    unit: str = "targets"
    extra_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        strategy = STRATEGIES[self.config.batching]
        extra = {"cap": self.config.max_targets_per_window} if self.config.batching == "every-position" else {}
        self.batching = strategy(self.dataset, self.config.max_history, self.config.batch_size, **extra)
        self.valid = self.dataset.examples("valid", self.config.max_history)

    def batches(self, epoch: int) -> list[np.ndarray]:
        self.model.train()
        return self.batching.epoch(epoch, self.config.seed)

    def step_loss(self, idx: np.ndarray) -> tuple[torch.Tensor, int, dict[str, float]]:
        loss, n = self.batching.loss(self.model, idx, self.device)
        return loss, n, {}

    def validate(self) -> dict[str, float]:
        from unisrec.evaluation.metrics import metrics_from_ranks, rank_examples

        ranks = rank_examples(self.model, *self.valid, self.config.eval_batch_size, self.device)
        return metrics_from_ranks(ranks, self.config.ks)

    def checkpointed(self, run: RunState) -> None:
        pass


@holds_output_lock
def fit(model: Any, dataset: Any, config: TrainConfig, output: str | os.PathLike, feature_name: str | None = None,
        extra: dict[str, Any] | None = None, resume: bool = False, sources: list[Any] | None = None) -> dict[str, Any]:
    """Train ``model`` on ``dataset``'s train split with early stopping; write the model directory.

    With ``sources`` (source-domain datasets) the step is the model's ``joint_task(dataset, sources,
    config, device)``: a task of the loop (see ``training.joint``) whose ``module`` -- the model plus
    the parameters only joint training uses -- is what the optimizer, the resume state and the best
    weights hold; the model directory keeps the model alone. Returns the metrics written to
    ``output/metrics.json``."""
    output, t_start = Path(output), time.time()
    ctx = DistContext(device=resolve_device(config.device))
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    saved = read_run_state(output)
    if saved is not None and not resume:
        raise UserError(f"{output} holds an unfinished or finished run ({output / 'resume'}); pass --resume or choose a new --output")
    if resume and saved is None:
        raise UserError(f"--resume: {output} has no resume state to continue from")
    if config.source and not sources:
        raise UserError(f"--source {' '.join(config.source)}: this run trains on its target only; "
                        "source domains are for `unisrec train` of a cross-domain model (recguru, ccdr)")
    model.to(ctx.device)
    task = model.joint_task(dataset, sources, config, ctx.device) if sources else SupervisedTask(model, dataset, config, ctx.device)
    output.mkdir(parents=True, exist_ok=True)
    module = getattr(task, "module", model)  # what is optimised and checkpointed (the model, plus a joint task's heads)
    optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=config.lr, weight_decay=config.weight_decay)
    if task.batching.num_targets == 0:
        raise UserError(f"dataset {dataset.path or dataset.name} has no training examples (users need >= 4 items)")
    log = RunLog(output, progress=config.progress)
    run, best = RunState(early_stopping=EarlyStopping(config.patience), config=extra.get("run_config", {}) if extra else {}), None
    if saved is not None:
        run, best = restore_run_state(output, module, optimizer, ctx)
        log.say(f"resuming {output} after epoch {run.epoch} (best valid {config.key_metric} {run.early_stopping.best:.4f} at epoch {run.early_stopping.best_epoch})")
    log.start(run.global_step if saved is not None else None)
    if hasattr(task, "describe"):  # a joint task names its domains and overlapping users
        log.say(task.describe())
    settings = LoopSettings(config.epochs, time_limit_minutes=config.time_limit_minutes, key_metric=config.key_metric,
                            checkpoint_minutes=config.checkpoint_minutes,
                            precision=config.precision)
    elapsed0 = run.elapsed
    reason, new_best = train_loop(task, module, optimizer, run, settings, ctx, log, output)
    best = new_best or best
    if best is not None:
        module.load_state_dict(best)
    return finish(model, dataset, config, output, run, reason, task, feature_name, extra, ctx, elapsed0 + time.time() - t_start)


def finish(model: Any, dataset: Any, config: TrainConfig, output: Path, run: RunState, reason: str, task: SupervisedTask,
           feature_name: str | None, extra: dict[str, Any] | None, ctx: DistContext, wall: float) -> dict[str, Any]:
    """Test the best weights, write metrics.json, the model directory and the per-user ranks.

    ``valid_ranks.npy`` / ``test_ranks.npy``: int32 0-based full-ranking rank of each user's target
    (one per user of the split, in dataset user order), so per-user metrics and paired significance
    tests (``unisrec benchmark``) need no re-evaluation; ``metrics_from_ranks`` turns them into R@K/N@K.
    ``test_exposure.npy``: int32 (n + 1,), how many test users have each item in their top 10 (from the
    same scoring pass): what the model recommends, for the long-tail analysis (docs/analyses.md)."""
    from unisrec.data.dataset import write_json
    from unisrec.evaluation.metrics import EXPOSURE_K, metrics_from_ranks, ranks_and_exposure
    from unisrec.models.model_dir import save_model_dir

    model.to(ctx.device)
    ranks, exposure = {}, {}
    for split in ("valid", "test"):
        hist, lens, targets = dataset.examples(split, config.max_history)
        if len(targets) == 0:
            raise UserError(f"dataset {dataset.path or dataset.name} has no {split} examples (every user is too short)")
        ranks[split], exposure[split] = ranks_and_exposure(model, hist, lens, targets, None if split == "valid" else EXPOSURE_K,
                                                           config.eval_batch_size, ctx.device)
    best_valid, test = (metrics_from_ranks(ranks[split], config.ks) for split in ("valid", "test"))
    history = RunLog(output).records()
    train_secs = [r["seconds"] for r in history]
    eval_secs = [r.get("eval_seconds", 0.0) for r in history]
    metrics = {
        "valid": best_valid, "test": test, "best_epoch": run.early_stopping.best_epoch,
        "epochs_run": run.epoch, "stop_reason": reason, "wall_seconds": wall,
        "median_epoch_seconds": float(np.median(train_secs)) if train_secs else None,
        "median_eval_seconds": float(np.median(eval_secs)) if eval_secs else None,
        # the largest peak of the run's processes (a resumed run has several), final test included
        "peak_rss_mb": max([r["peak_rss_mb"] for r in history if r.get("peak_rss_mb")] + [peak_rss_mb() or 0.0]),
        "train_examples": task.batching.num_targets, "device": str(ctx.device), "seed": config.seed,
    }
    model.cpu()
    meta = {k: v for k, v in (extra or {}).items() if k != "run_config"}
    meta.update(training=asdict(config), metrics={"valid": best_valid, "test": test, "best_epoch": run.early_stopping.best_epoch})
    save_model_dir(model, output, dataset, feature_name=feature_name, extra=meta)
    for split, r in ranks.items():
        np.save(output / f"{split}_ranks.npy", r.astype(np.int32))
    np.save(output / "test_exposure.npy", exposure["test"].astype(np.int32))
    write_json(output / "metrics.json", metrics)
    RunLog(output).say(f"best epoch {run.early_stopping.best_epoch}; test " + " ".join(f"{k} {v:.4f}" for k, v in test.items()))
    return metrics


def resumed_configs(output: Path, train: TrainConfig, model_config: Any, resume: bool) -> tuple[TrainConfig, Any]:
    """On --resume the saved run's configs win, except epochs, device, threads, progress, the time cap and
    the mid-epoch checkpoint interval (how a run is kept, not what it learns)."""
    from unisrec.models.checkpoint import config_from_dict

    saved = read_run_state(output) if resume else None
    if saved is None or "train" not in saved.config:
        return train, model_config
    kept = {k: getattr(train, k) for k in ("epochs", "device", "threads", "progress", "time_limit_minutes", "checkpoint_minutes")}
    train = TrainConfig(**{**saved.config["train"], **kept})
    if model_config is not None and "model" in saved.config:
        model_config = config_from_dict(type(model_config), saved.config["model"])
    return train, model_config


def load_dataset_features(dataset: Any, config: TrainConfig) -> tuple[str, dict[str, Any], np.ndarray]:
    """(feature set name, its manifest entry, a writable float32 copy) of the dataset's text features."""
    name, info = dataset.feature_info(config.features)
    return name, info, np.array(dataset.features(name), dtype=np.float32)


@holds_output_lock
def train_model(name: str, dataset_dir: str | os.PathLike, output: str | os.PathLike, train: TrainConfig | None = None,
                model_config: Any = None, resume: bool = False) -> dict[str, Any]:
    """Train registered model ``name`` from scratch on a dataset directory; returns its metrics."""
    from unisrec.models import registry

    spec = registry.get(name)
    output = Path(output)
    source = output  # stopped inside a model's own pre-training stage: that stage's state holds the configs
    if resume and read_run_state(output) is None and read_run_state(output / PRETRAIN_DIR) is not None:
        source = output / PRETRAIN_DIR
    train, model_config = resumed_configs(source, train or TrainConfig(), model_config or spec.config_class(), resume)
    if train.batching == TrainConfig.batching and train.batching not in spec.batchings and spec.default_batching:
        train = replace(train, batching=spec.default_batching)  # e.g. BERT4Rec: its Cloze task
    if train.batching not in spec.batchings:
        raise UserError(f"model {name} does not support --batching {train.batching} (it supports: {', '.join(spec.batchings)})")
    model, ds, sources, feature_name, feature_info = build_model(spec, dataset_dir, train, model_config)
    if train.init_from and not resume:
        load_init_weights(model, train.init_from, name, feature_info)
    check_history(model, train)
    run_config = {"train": asdict(train), "model": asdict(model.config)}
    if hasattr(model, "pretraining_task"):  # the model's own pre-training stage (S3-Rec), run to completion first
        if run_pretraining_stage(model, ds, train, output / PRETRAIN_DIR, resume, run_config) is not None:
            seed_everything(train.seed)  # fitting draws the same numbers whether the stage ran now or in an earlier sitting
        resume = resume and read_run_state(output) is not None  # a stage finished just now: fitting starts fresh
    return fit(model, ds, train, output, feature_name=feature_name, extra={"run_config": run_config}, resume=resume,
               sources=sources)


def build_model(spec: Any, dataset_dir: str | os.PathLike, train: TrainConfig, model_config: Any) -> tuple[Any, Any, list[Any], str | None, dict[str, Any]]:
    """A registered model (``spec``) built for a dataset directory, seeded: (model, dataset, source
    datasets, feature-set name, feature info); what :func:`train_model` and the speed benchmark share."""
    from unisrec.data.dataset import Dataset

    ds = Dataset.load(dataset_dir)
    sources = load_sources(spec, ds, train)
    feature_name, feats = None, None
    feature_info: dict[str, Any] = {}
    if spec.model_class.uses_text:
        feature_name, feature_info, feats = load_dataset_features(ds, train)
    seed_everything(train.seed)
    try:
        model = spec.model_class.for_dataset(model_config, ds.num_items, None if feats is None else torch.from_numpy(feats))
    except ValueError as exc:
        raise UserError(f"model {spec.name}: {exc}") from None
    return model, ds, sources, feature_name, feature_info


def load_sources(spec: Any, target: Any, train: TrainConfig) -> list[Any]:
    """The source-domain datasets of ``train.source`` (``--source DIR``), for a model with a ``joint_task``.

    A cross-domain model needs at least one; any other model refuses them; the target itself is no source."""
    from unisrec.data.dataset import Dataset

    joint = hasattr(spec.model_class, "joint_task")
    if train.source and not joint:
        raise UserError(f"--source: model {spec.name} trains on its target only; source domains are for the "
                        "cross-domain models (recguru, ccdr)")
    if joint and not train.source:
        raise UserError(f"model {spec.name} trains on source domains and the target together: give at least one --source DIR")
    sources = []
    for path in train.source:
        if target.path is not None and Path(path).resolve() == Path(target.path).resolve():
            raise UserError(f"--source {path}: that is the target dataset itself")
        sources.append(Dataset.load(path))
    return sources


# ----------------------------------------------------------------------------------------------
# A model's own pre-training stage.
#
# A model class may define ``pretraining_task(dataset, train_config, device)`` returning a task for
# ``training.loop.train_loop`` (the loop's task protocol) or None. The task also names what to
# optimise and for how long: ``module`` (an nn.Module holding the model and any extra heads),
# ``epochs``, ``lr`` and ``time_limit_minutes`` (0 = none). ``train_model`` runs it to completion
# before ``fit``, into OUTPUT/pretrain/ with its own resume state (``resume/``) and log
# (``training_log.jsonl``); when it ends (its epochs, or its time cap) the model's weights go to
# ``pretrain/model.safetensors`` and ``pretrain/done.json`` records how it ended. A resumed run
# continues an unfinished stage and never repeats a finished one (it loads those weights instead).
PRETRAIN_DIR = "pretrain"


def run_pretraining_stage(model: Any, dataset: Any, config: TrainConfig, output: Path, resume: bool,
                          run_config: dict[str, Any]) -> dict[str, Any] | None:
    """Run ``model.pretraining_task`` to completion in ``output`` (see above); returns done.json's content."""
    import json

    from safetensors.torch import load_file

    from unisrec.data.dataset import write_json
    from unisrec.models.checkpoint import save_safetensors
    from unisrec.training.state import cpu_state

    ctx = DistContext(device=resolve_device(config.device))
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    done = output / DONE_NAME
    if done.is_file():
        if not resume:
            raise UserError(f"{output.parent} holds a run ({output}); pass --resume or choose a new --output")
        model.load_state_dict(load_file(str(output / "model.safetensors")))
        RunLog(output.parent, progress=False).say(f"pre-training stage already finished ({output}); not repeated")
        return json.loads(done.read_text())
    task = model.pretraining_task(dataset, config, ctx.device)
    if task is None:
        return None
    saved = read_run_state(output)
    if saved is not None and not resume:
        raise UserError(f"{output.parent} holds an unfinished run ({output / 'resume'}); pass --resume or choose a new --output")
    if resume and saved is None and read_run_state(output.parent) is None:
        raise UserError(f"--resume: {output.parent} has no resume state to continue from")
    output.mkdir(parents=True, exist_ok=True)
    optimizer = torch.optim.Adam([p for p in task.module.parameters() if p.requires_grad], lr=task.lr)
    log = RunLog(output, progress=config.progress)
    run = RunState(early_stopping=EarlyStopping(config.patience), config=run_config)
    if saved is not None:
        run, _ = restore_run_state(output, task.module, optimizer, ctx)
        log.say(f"resuming the pre-training stage in {output} after epoch {run.epoch}")
    log.start(run.global_step if saved is not None else None)
    settings = LoopSettings(task.epochs, time_limit_minutes=task.time_limit_minutes, precision=config.precision,
                            checkpoint_minutes=config.checkpoint_minutes)
    reason, _ = train_loop(task, task.module, optimizer, run, settings, ctx, log, output)
    save_safetensors(cpu_state(model), output / "model.safetensors")
    info = {"stop_reason": reason, "epochs_run": run.epoch, "steps": run.global_step, "seconds": run.elapsed}
    write_json(done, info)
    log.say(f"pre-training stage done: {run.epoch} epochs ({reason})")
    return info


def load_init_weights(model: Any, source: str | os.PathLike, name: str, feature_info: dict[str, Any]) -> None:
    """``--init-from``: load a model directory's weights into the fresh ``model``; every tensor must
    exist on both sides with the same shape (so an ID model never starts from another catalogue),
    and a text model's directory must have been trained on vectors of the same text encoder."""
    from unisrec.models.checkpoint import load_checkpoint
    from unisrec.models.model_dir import read_model_config

    cfg = read_model_config(source)
    _, state = load_checkpoint(source, name)  # also refuses another model type
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise UserError(f"--init-from {source}: its weights do not fit this {name} model (missing: {missing or '-'}; "
                        f"unexpected: {unexpected or '-'}; shape saved vs here: {shapes or '-'}); the architecture flags "
                        "must match, and a model with per-item weights cannot start from another catalogue")
    theirs, ours = (cfg.get("encoder") or {}).get("encoder"), feature_info.get("encoder")
    if model.uses_text and theirs != ours:
        raise UserError(f"--init-from {source}: it was trained on text vectors of encoder {theirs!r}, "
                        f"this dataset's feature set is from {ours!r}; encode both with the same encoder")
    model.load_state_dict(state, strict=False)


def check_history(model: Any, train: TrainConfig) -> None:
    if model.max_seq_length < train.max_history:
        raise UserError(f"max_history {train.max_history} exceeds the model's max_seq_length {model.max_seq_length}")
