"""Training options as typed dataclasses, torch-free so the CLI builds its flags without torch.

:class:`TrainConfig` -- supervised training of any registered model (`unisrec train`, `unisrec
finetune`); :class:`PretrainConfig` -- `unisrec pretrain`. Model hyper-parameters are not here:
each model's own config (``models/``) holds them. Defaults are the paper's (docs/protocol.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from unisrec.errors import UserError

Batching = Literal["last-item", "every-position", "cloze", "cloze-prefix"]
Precision = Literal["float32", "bfloat16", "auto"]
PRECISION_HELP = ("float32 (the paper's) or bfloat16: each step's forward pass under autocast (matrix products in "
                  "bfloat16; weights, optimizer state, validation and test stay float32): 1.3-2.1x faster epochs on "
                  "CPUs with AVX512-BF16 (measured) or AMX and on recent GPUs, ~19x slower products on CPUs without "
                  "(measured on AVX2); auto = bfloat16 where the device multiplies it natively, else float32, decided "
                  "on each machine a run (or its resumed part) trains on (docs/training.md \"Precision\")")


@dataclass
class TrainConfig:
    """Supervised training: Adam, cross-entropy over all items, full-ranking validation each epoch,
    early stopping on valid NDCG@10 (docs/protocol.md "Fine-tuning")."""

    epochs: int = field(default=300, metadata={"help": "upper bound on epochs (early stopping ends sooner)"})
    batch_size: int = field(default=2048, metadata={"help": "training examples (targets) per step"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    weight_decay: float = field(default=0.0, metadata={"help": "Adam weight decay"})
    patience: int = field(default=10, metadata={"help": "epochs without a better valid NDCG@10 before stopping"})
    seed: int = field(default=2020, metadata={"help": "seeds initialisation, shuffling and dropout"})
    device: str = field(default="auto", metadata={"help": "cpu, cuda, cuda:1 or auto"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = torch default)"})
    max_history: int = field(default=50, metadata={"help": "history window (last N items)"})
    batching: Batching = field(default="last-item", metadata={
        "help": "last-item = the paper's (one example per training prefix); every-position = each user's "
        "training part encoded once, a loss at every position (faster); cloze = BERT4Rec's masked-item task "
        "over each user's training part; cloze-prefix = the same over every training prefix (RecBole's samples; "
        "BERT4Rec's default)"})
    max_targets_per_window: int = field(default=0, metadata={
        "help": "every-position: at most this many targets of one session per window piece (0 = no cap); "
        "spreads a step over more sessions with the same context per target, at more compute"})
    features: str | None = field(default=None, metadata={"help": "feature set of the dataset, for text models (default: the manifest's default)"})
    precision: Precision = field(default="float32", metadata={"help": PRECISION_HELP})
    time_limit_minutes: float = field(default=0.0, metadata={"help": "training wall-time cap (0 = none): no epoch starts that would end past it; recorded in metrics.json"})
    checkpoint_minutes: float = field(default=0.0, metadata={
        "help": "also write the resume checkpoint inside an epoch every N minutes of training (0 = at epoch ends only): "
        "a run killed mid-epoch resumes at the step it reached, losing at most N minutes"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    eval_batch_size: int = field(default=1024, metadata={
        "help": "histories per full-ranking evaluation batch (4,096 peaks at 1.8 GB on Online Retail, 1,024 at 0.8 GB, same speed)"})
    ks: list[int] = field(default_factory=lambda: [10, 50], metadata={"help": "cut-offs K for Recall@K / NDCG@K"})
    init_from: str | None = field(default=None, metadata={
        "help": "start from this model directory's weights (same model and shapes, e.g. a text model trained on another domain)"})
    source: list[str] = field(default_factory=list, metadata={
        "repeat": True, "metavar": "DIR",
        "help": "a source-domain dataset directory, for the cross-domain models (recguru, ccdr) that train on the "
        "source domains and the target together; repeat for several (--source A --source B)"})

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "patience", "max_history", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise UserError(f"lr must be > 0, got {self.lr}")
        if not self.checkpoint_minutes >= 0:  # also refuses NaN
            raise UserError(f"checkpoint_minutes must be >= 0, got {self.checkpoint_minutes}")
        if self.batching not in get_args(Batching):
            raise UserError(f"batching must be one of {', '.join(get_args(Batching))}, got {self.batching!r}")
        check_precision(self.precision)
        if len(set(self.source)) != len(self.source):
            raise UserError(f"source names a dataset twice: {self.source}")
        if not self.ks or min(self.ks) < 1:
            raise UserError(f"ks must be positive cut-offs, got {self.ks}")

    @property
    def key_metric(self) -> str:
        return "ndcg@10" if 10 in self.ks else f"ndcg@{self.ks[0]}"



@dataclass
class PretrainConfig:
    """Multi-domain pre-training (docs/protocol.md "Pre-training")."""

    epochs: int = field(default=300, metadata={"help": "passes over all domains' training prefixes"})
    max_steps: int = field(default=0, metadata={"help": "stop after this many optimizer steps in total (0 = no limit)"})
    batch_size: int = field(default=1024, metadata={"help": "global batch = in-batch candidates (release: 8192)"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    weight_decay: float = field(default=0.0, metadata={"help": "Adam weight decay"})
    seed: int = field(default=2020, metadata={"help": "seeds initialisation, shuffling, augmentation, dropout"})
    save_every: int = field(default=10, metadata={"help": "write the checkpoint every N epochs (and at the end)"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:1, ..."})
    resume: bool = field(default=False, metadata={"help": "continue from OUTPUT's last checkpoint"})
    lambda_ss: float = field(default=1e-3, metadata={"help": "weight of the sequence-sequence loss, Eq. (10); 0 = ablation w/o S-S (not computed)"})
    lambda_si: float = field(default=1.0, metadata={"help": "weight of the sequence-item loss, Eq. (10) (paper: 1); 0 = ablation w/o S-I (not computed)"})
    temperature: float = field(default=0.07, metadata={"help": "softmax temperature of both contrastive losses"})
    item_drop_prob: float = field(default=0.9, metadata={"help": "probability a view is item drop (else word drop)"})
    drop_prob: float = field(default=0.2, metadata={"help": "per-item drop / per-position feature swap probability"})
    max_history: int = field(default=50, metadata={"help": "history window (items)"})
    features: str | None = field(default=None, metadata={"help": "feature set name (default: each dataset's default)"})
    all_positions: bool = field(default=False, metadata={"help": "also train on each user's last two items"})
    time_limit_minutes: float = field(default=0.0, metadata={"help": "stop (and checkpoint) after this much training time (0 = none)"})
    checkpoint_minutes: float = field(default=0.0, metadata={
        "help": "also write the resume checkpoint inside an epoch every N minutes of training (0 = at save_every epoch ends only)"})
    init_from: str | None = field(default=None, metadata={"help": "start from this pre-trained checkpoint's weights (fresh optimizer)"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = torch's default)"})
    precision: Precision = field(default="float32", metadata={"help": PRECISION_HELP})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.batch_size < 2:
            raise UserError(f"batch_size must be at least 2 (in-batch negatives), got {self.batch_size}")
        if self.epochs < 1 and self.max_steps < 1:
            raise UserError("nothing to do: epochs and max_steps are both < 1")
        for name in ("item_drop_prob", "drop_prob"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise UserError(f"{name} must be in [0, 1], got {v}")
        if self.temperature <= 0:
            raise UserError(f"temperature must be > 0, got {self.temperature}")
        for name in ("lambda_si", "lambda_ss", "checkpoint_minutes"):
            if not getattr(self, name) >= 0:  # also refuses NaN
                raise UserError(f"{name} must be >= 0, got {getattr(self, name)}")
        check_precision(self.precision)
        if self.lambda_si == 0 and self.lambda_ss == 0:
            raise UserError("lambda_si and lambda_ss are both 0: nothing to pre-train (set at least one > 0)")


def check_precision(precision: str) -> None:
    if precision not in get_args(Precision):
        raise UserError(f"precision must be one of {', '.join(get_args(Precision))}, got {precision!r}")
