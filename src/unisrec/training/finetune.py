"""Fine-tuning UniSRec on one target domain (SPEC "Fine-tuning", Eq. 11-12) and training SASRec.

Both models go through the same loop (:func:`fit`): Adam, cross-entropy over every item of the
domain (padding excluded), full-ranking validation each epoch, early stopping on valid NDCG@10
(patience 10), the best checkpoint restored for the test split, a per-epoch JSONL log and a resume
state. API::

    finetune(dataset_dir, output, FinetuneConfig(mode="inductive"), pretrained=None) -> metrics
    train_sasrec(dataset_dir, output, FinetuneConfig()) -> metrics

The training step is where the time goes, so it differs from the authors' release in *how* it
computes, not in what (see ``docs/training.md``):

* the item-wise MoE adaptor runs once per step over the item table and the sequences gather from
  it (the release re-adapts every position of every padded sequence);
* all-item scores are one matmul, the loss is ``F.cross_entropy`` (log-space);
* a batch keeps the release's random composition, but its sequences are encoded in a few
  length groups, each padded only to its own longest history (the release pads everything to 50,
  Scientific's mean history is ~7). The result per sequence is the same function; only the
  dropout draws differ.
* optional ``every_position``: encode each user's training part once and take a loss at every
  position (causal attention gives each position exactly its prefix).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from unisrec.errors import UserError

# history-length group boundaries for one batch: <=2, 3-4, 5-8, 9-16, 17-32, 33+
LENGTH_GROUPS = (2, 4, 8, 16, 32)


@dataclass
class FinetuneConfig:
    """Fine-tuning / baseline-training options; defaults are the paper's (SPEC "Fine-tuning")."""

    # --- optimisation
    epochs: int = field(default=300, metadata={"help": "upper bound on epochs (early stopping ends sooner)"})
    batch_size: int = field(default=2048, metadata={"help": "training examples per step"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    weight_decay: float = 0.0
    patience: int = field(default=10, metadata={"help": "epochs without a better valid NDCG@10 before stopping"})
    seed: int = 2020
    device: str = field(default="auto", metadata={"help": "cpu, cuda, cuda:1 or auto"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = torch default)"})
    max_history: int = field(default=50, metadata={"help": "history window (last N items)"})
    every_position: bool = field(
        default=False, metadata={"help": "train every position of a user's training part at once (faster, not the paper's batching)"}
    )
    time_limit_minutes: float = field(default=0.0, metadata={"help": "training wall-time cap (0 = none): no epoch starts that would end past it; recorded in metrics.json"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    # --- evaluation
    eval_batch_size: int = 4096
    ks: list[int] = field(default_factory=lambda: [10, 50], metadata={"help": "cut-offs K for Recall@K / NDCG@K"})
    # --- UniSRec only
    mode: str = field(default="inductive", metadata={"help": "inductive (UniSRec_t, text only) or transductive (UniSRec_t+ID)"})
    features: str | None = field(default=None, metadata={"help": "feature set of the dataset (default: the manifest's default)"})
    unfreeze_all: bool = field(default=False, metadata={"help": "with --from: train the Transformer and positions too"})
    # --- model hyper-parameters (scratch models; a pre-trained checkpoint brings its own)
    hidden_size: int = 300
    n_layers: int = 2
    n_heads: int = 2
    inner_size: int = 256
    hidden_dropout: float = 0.5
    attn_dropout: float = 0.5
    n_experts: int = 8
    adaptor_dropout: float = 0.2
    noisy_gating: bool = True
    temperature: float = 0.07

    def __post_init__(self) -> None:
        if self.mode not in ("inductive", "transductive"):
            raise UserError(f"mode must be inductive or transductive, got {self.mode!r}")
        for name in ("epochs", "batch_size", "patience", "max_history", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise UserError(f"lr must be > 0, got {self.lr}")
        if not self.ks or min(self.ks) < 1:
            raise UserError(f"ks must be positive cut-offs, got {self.ks}")


def encoder_settings(config: FinetuneConfig) -> dict[str, Any]:
    """The Transformer settings UniSRec and SASRec share (SPEC "Model"), for a scratch model."""
    return dict(
        hidden_size=config.hidden_size,
        n_layers=config.n_layers,
        n_heads=config.n_heads,
        inner_size=config.inner_size,
        hidden_dropout=config.hidden_dropout,
        attn_dropout=config.attn_dropout,
        max_seq_length=config.max_history,
    )


# ---------------------------------------------------------------------------- batches
def train_windows(dataset: Any, max_history: int, stride: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every-position training data: (inputs [W, H], lengths [W], targets [W, H], counted [W, H]).

    A user's training part s[0..m] (targets s[1..m], m = len - 3) becomes one window of inputs
    s[0:m] when m <= H. Longer parts get overlapping windows ending at H, H + stride, ..., m, and a
    window only counts the targets the previous one did not, so every target is trained once and
    sees at least ``stride`` (default H/2) earlier items -- the faithful mode gives it the last H.
    Vectorised over users.
    """
    h = max_history
    stride = stride or max(h // 2, 1)
    lengths = dataset.seq_lengths.astype(np.int64)
    starts = dataset.seq_offsets[:-1].astype(np.int64)
    m = lengths - 3
    users = np.nonzero(m >= 1)[0]
    m, starts = m[users], starts[users]
    count = np.where(m <= h, 1, 1 + np.ceil(np.maximum(m - h, 0) / stride).astype(np.int64))
    w_user = np.repeat(np.arange(len(users)), count)
    k = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    mm = m[w_user]
    end = np.minimum(h + k * stride, mm)
    prev_end = np.where(k == 0, 0, np.minimum(h + (k - 1) * stride, mm))
    begin = end - np.minimum(end, h)
    cols = np.arange(h)
    width = (end - begin)[:, None]
    valid = cols[None, :] < width
    pos = starts[w_user][:, None] + begin[:, None] + cols[None, :]
    last = len(dataset.seq_items) - 1
    inputs = np.where(valid, dataset.seq_items[np.minimum(pos, last)], 0).astype(np.int64)
    targets = np.where(valid, dataset.seq_items[np.minimum(pos + 1, last)], 0).astype(np.int64)
    counted = valid & ((begin[:, None] + cols[None, :] + 1) > prev_end[:, None])
    return inputs, (end - begin).astype(np.int64), targets, counted


def epoch_batches(n: int, batch_size: int, rng: np.random.Generator, weights: np.ndarray | None = None) -> list[np.ndarray]:
    """Shuffled index batches; with ``weights`` (targets per row) each batch holds ~batch_size targets."""
    perm = rng.permutation(n)
    if weights is None:
        return [perm[i : i + batch_size] for i in range(0, n, batch_size)]
    before = np.cumsum(weights[perm]) - weights[perm]
    cut = np.flatnonzero(np.diff(before // batch_size)) + 1
    return np.split(perm, cut)


def length_groups(lengths: np.ndarray) -> list[np.ndarray]:
    """Positions of a batch split by history length (see LENGTH_GROUPS), empty groups dropped."""
    gid = np.searchsorted(np.asarray(LENGTH_GROUPS), lengths, side="left")
    order = np.argsort(gid, kind="stable")
    bounds = np.flatnonzero(np.diff(gid[order])) + 1
    return [g for g in np.split(order, bounds) if len(g)]


def batch_loss_last(model: Any, hist: np.ndarray, lens: np.ndarray, tgt: np.ndarray, device: Any) -> "torch.Tensor":  # noqa: F821
    """Faithful step: cross-entropy of each history's next item over all items (Eq. 11/12 scores).

    The item table is adapted once; each length group is encoded padded to its own longest.
    """
    import torch
    import torch.nn.functional as F

    table = model.item_representations()
    reprs, targets = [], []
    for g in length_groups(lens):
        width = int(lens[g].max())
        seq = torch.from_numpy(hist[g, :width]).to(device, non_blocking=True)
        reprs.append(model.sequence_representation(seq, torch.from_numpy(lens[g]).to(device), table))
        targets.append(torch.from_numpy(tgt[g]))
    logits = model.scores(torch.cat(reprs), table)
    return F.cross_entropy(logits, torch.cat(targets).to(device))


def batch_loss_every_position(
    model: Any, inputs: np.ndarray, lens: np.ndarray, tgt: np.ndarray, counted: np.ndarray, device: Any
) -> "torch.Tensor":  # noqa: F821
    """Every-position step: one causal pass per window, a loss at every counted position."""
    import torch
    import torch.nn.functional as F

    table = model.item_representations()
    reprs, targets = [], []
    for g in length_groups(lens):
        width = int(lens[g].max())
        seq = torch.from_numpy(inputs[g, :width]).to(device)
        out = model.encoder.forward_all(table[seq], torch.from_numpy(lens[g]).to(device))
        mask = torch.from_numpy(counted[g, :width]).to(device)
        reprs.append(out[mask])
        targets.append(torch.from_numpy(tgt[g, :width][counted[g, :width]]))
    logits = model.scores(torch.cat(reprs), table)
    return F.cross_entropy(logits, torch.cat(targets).to(device))


# ---------------------------------------------------------------------------- the loop
def fit(
    model: Any,
    dataset: Any,
    config: FinetuneConfig,
    output: str | Path,
    feature_name: str | None = None,
    extra: dict[str, Any] | None = None,
    resume: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train ``model`` on ``dataset``'s train split with early stopping; write the model directory.

    Returns the metrics written to ``output/metrics.json``.
    """
    import torch
    from tqdm.auto import tqdm

    from unisrec.data.dataset import write_json
    from unisrec.evaluation.metrics import evaluate_model, rank_examples, metrics_from_ranks
    from unisrec.models.model_dir import save_model_dir
    from unisrec.training import loop

    output = Path(output)
    say = log or (lambda s: tqdm.write(s))
    device = loop.resolve_device(config.device)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    saved = loop.load_resume_state(output)
    if saved is not None and not resume:
        raise UserError(f"{output} holds an unfinished or finished run ({output / loop.RESUME_DIR}); pass --resume or choose a new --output")
    if resume and saved is None:
        raise UserError(f"--resume: {output} has no {loop.RESUME_DIR}/state.json to resume from")
    output.mkdir(parents=True, exist_ok=True)

    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    stopper = loop.EarlyStopping(config.patience)
    key_metric = "ndcg@10" if 10 in config.ks else f"ndcg@{config.ks[0]}"
    log_path = output / "training_log.jsonl"
    start_epoch, elapsed0, best_state = 1, 0.0, None
    if saved is not None:
        best_state = loop.restore_resume_state(output, model, optimizer, saved, device)
        es = saved["early_stopping"]
        stopper = loop.EarlyStopping(config.patience, es["best"], es["best_epoch"], es["bad_epochs"])
        start_epoch, elapsed0 = saved["epoch"] + 1, saved["elapsed"]
        kept = [r for r in loop.read_jsonl(log_path) if r["epoch"] <= saved["epoch"]]
        log_path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
        say(f"resuming {output} after epoch {saved['epoch']} (best valid {key_metric} {stopper.best:.4f} at epoch {stopper.best_epoch})")
    elif log_path.exists():
        log_path.unlink()

    if config.every_position:
        w_in, w_len, w_tgt, w_cnt = train_windows(dataset, config.max_history)
        w_weights = w_cnt.sum(1)
        n_train = int(w_weights.sum())
    else:
        hist, lens, tgt = dataset.examples("train", config.max_history)
        n_train = len(tgt)
    if n_train == 0:
        raise UserError(f"dataset {dataset.path or dataset.name} has no training examples (users need >= 4 items)")
    v_hist, v_lens, v_tgt = dataset.examples("valid", config.max_history)

    t_start = time.time()
    stop_reason = "max_epochs"
    train_secs: list[float] = []
    eval_secs: list[float] = []
    epoch = start_epoch - 1
    last_epoch = start_epoch - 1 if stopper.should_stop else config.epochs  # a resumed, finished run
    for epoch in range(start_epoch, last_epoch + 1):
        rng = np.random.default_rng([config.seed, epoch])
        model.train()
        t0 = time.time()
        if config.every_position:
            batches = epoch_batches(len(w_len), config.batch_size, rng, w_weights)
        else:
            batches = epoch_batches(n_train, config.batch_size, rng)
        total, count = 0.0, 0
        bar = tqdm(batches, desc=f"epoch {epoch}", leave=False, disable=not config.progress, unit="step")
        for idx in bar:
            if config.every_position:
                loss = batch_loss_every_position(model, w_in[idx], w_len[idx], w_tgt[idx], w_cnt[idx], device)
                n = int(w_weights[idx].sum())
            else:
                loss = batch_loss_last(model, hist[idx], lens[idx], tgt[idx], device)
                n = len(idx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            val = float(loss.detach())
            if not math.isfinite(val):
                raise RuntimeError(f"epoch {epoch}: loss became {val}; lower --lr")
            total += val * n
            count += n
            bar.set_postfix(loss=f"{val:.4f}")
        bar.close()
        t1 = time.time()
        ranks = rank_examples(model, v_hist, v_lens, v_tgt, config.eval_batch_size, device)
        valid = metrics_from_ranks(ranks, config.ks)
        t2 = time.time()
        train_secs.append(t1 - t0)
        eval_secs.append(t2 - t1)
        improved = stopper.step(valid[key_metric], epoch)
        if improved:
            best_state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
        record = {"epoch": epoch, "loss": total / count, "seconds": t1 - t0, "eval_seconds": t2 - t1, "valid": valid}
        loop.append_jsonl(log_path, record)
        shown = " ".join(f"{k} {v:.4f}" for k, v in valid.items())
        say(f"epoch {epoch:3d}  loss {total / count:.4f}  valid {shown}  {t1 - t0:.1f}s (+{t2 - t1:.1f}s eval){'  *' if improved else ''}")
        elapsed = elapsed0 + time.time() - t_start
        loop.save_resume_state(
            output,
            model,
            optimizer,
            best_state if improved else None,
            {"epoch": epoch, "early_stopping": stopper.to_dict(), "elapsed": elapsed, "config": asdict(config)},
        )
        if stopper.should_stop:
            stop_reason = "early_stopping"
            break
        # stop when the next epoch (assumed as long as this one) would end past the cap, so a
        # capped run finishes inside its budget instead of overrunning it by up to one epoch
        now = time.time()
        if config.time_limit_minutes and ((now - t_start) + (now - t0)) / 60 >= config.time_limit_minutes:
            stop_reason = "time_limit"
            say(f"time limit of {config.time_limit_minutes} min reached after epoch {epoch}")
            break

    if best_state is not None:
        model.load_state_dict(best_state)
    model.to(device)
    best_valid = evaluate_model(model, dataset, "valid", config.ks, config.eval_batch_size, device, config.max_history)
    test = evaluate_model(model, dataset, "test", config.ks, config.eval_batch_size, device, config.max_history)
    history = loop.read_jsonl(log_path)
    all_train = [r["seconds"] for r in history]
    all_eval = [r.get("eval_seconds", 0.0) for r in history]
    metrics = {
        "valid": best_valid,
        "test": test,
        "best_epoch": stopper.best_epoch,
        "epochs_run": epoch if history else 0,
        "stop_reason": stop_reason,
        "wall_seconds": elapsed0 + time.time() - t_start,
        "median_epoch_seconds": float(np.median(all_train)) if all_train else None,
        "median_eval_seconds": float(np.median(all_eval)) if all_eval else None,
        "train_examples": n_train,
        "device": str(device),
        "seed": config.seed,
    }
    model.cpu()
    meta = {"training": asdict(config), "metrics": {"valid": best_valid, "test": test, "best_epoch": stopper.best_epoch}}
    meta.update(extra or {})
    save_model_dir(model, output, dataset, feature_name=feature_name, extra=meta)
    write_json(output / "metrics.json", metrics)
    say(f"best epoch {stopper.best_epoch}; test " + " ".join(f"{k} {v:.4f}" for k, v in test.items()))
    return metrics


# ---------------------------------------------------------------------------- entry points
def _resumed_config(output: Path, config: FinetuneConfig, resume: bool) -> FinetuneConfig:
    """On --resume the saved run's config wins, except epochs, device, threads and progress."""
    from unisrec.training import loop

    saved = loop.load_resume_state(output) if resume else None
    if saved is None:
        return config
    cfg = FinetuneConfig(**saved["config"])
    for k in ("epochs", "device", "threads", "progress", "time_limit_minutes"):
        setattr(cfg, k, getattr(config, k))
    return cfg


def finetune(
    dataset_dir: str | Path,
    output: str | Path,
    config: FinetuneConfig | None = None,
    pretrained: str | Path | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Fine-tune UniSRec (``config.mode``) on a dataset dir; from scratch unless ``pretrained``.

    With a pre-trained checkpoint (a ``UniSRec.save_pretrained`` directory) the Transformer and
    position embeddings are frozen (``config.unfreeze_all`` trains everything); the adaptor, the
    input LayerNorm and (transductive) the fresh ID table train.
    """
    import torch

    from unisrec.data.dataset import Dataset
    from unisrec.models.model_dir import read_model_config
    from unisrec.models.unisrec import UniSRec, UniSRecConfig
    from unisrec.training import loop

    output = Path(output)
    config = _resumed_config(output, config or FinetuneConfig(), resume)
    ds = Dataset.load(dataset_dir)
    feat_name, info = ds.feature_info(config.features)
    feats = np.array(ds.features(feat_name), dtype=np.float32)  # a writable copy, not the mmap
    text_dim = int(feats.shape[1])
    loop.seed_everything(config.seed)
    if pretrained is not None:
        pre_cfg = read_model_config(pretrained)
        if pre_cfg.get("model_type") != "unisrec":
            raise UserError(f"{pretrained}/config.json: --from needs a UniSRec checkpoint, found {pre_cfg.get('model_type')!r}")
        pre_dim = int(pre_cfg["model"]["text_dim"])
        if pre_dim != text_dim:
            raise UserError(
                f"{pretrained} was pre-trained on {pre_dim}-d text features but feature set {feat_name!r} of "
                f"{dataset_dir} is {text_dim}-d ({info.get('encoder')}); encode the dataset with the checkpoint's encoder"
            )
        try:
            model = UniSRec.from_pretrained(pretrained, mode=config.mode, num_items=ds.num_items)
        except (ValueError, OSError) as exc:
            raise UserError(f"cannot load pre-trained checkpoint {pretrained}: {exc}") from None
        if not config.unfreeze_all:
            model.freeze_for_transfer()
    else:
        model = UniSRec(
            UniSRecConfig(
                text_dim=text_dim,
                **encoder_settings(config),
                n_experts=config.n_experts,
                adaptor_dropout=config.adaptor_dropout,
                noisy_gating=config.noisy_gating,
                temperature=config.temperature,
                mode=config.mode,
                num_items=ds.num_items,
            )
        )
    if model.config.max_seq_length < config.max_history:
        raise UserError(f"max_history {config.max_history} exceeds the model's max_seq_length {model.config.max_seq_length}")
    model.set_item_features(torch.from_numpy(feats))
    extra = {"pretrained": str(Path(pretrained).resolve()) if pretrained else None}
    return fit(model, ds, config, output, feature_name=feat_name, extra=extra, resume=resume)


def train_sasrec(
    dataset_dir: str | Path, output: str | Path, config: FinetuneConfig | None = None, resume: bool = False
) -> dict[str, Any]:
    """Train the SASRec baseline (ID embeddings, same encoder and protocol) on a dataset dir."""
    from unisrec.data.dataset import Dataset
    from unisrec.models.baselines.sasrec import SASRec, SASRecConfig
    from unisrec.training import loop

    output = Path(output)
    config = _resumed_config(output, config or FinetuneConfig(), resume)
    ds = Dataset.load(dataset_dir)
    loop.seed_everything(config.seed)
    model = SASRec(
        SASRecConfig(
            num_items=ds.num_items,
            **encoder_settings(config),
        )
    )
    return fit(model, ds, config, output, feature_name=None, resume=resume)
