"""Options of `unisrec pretrain` (SPEC "Pre-training"): one dataclass, torch-free so the CLI can
build its parser without importing torch."""

from __future__ import annotations

from dataclasses import dataclass, field

from unisrec.errors import UserError


@dataclass
class PretrainConfig:
    epochs: int = field(default=300, metadata={"help": "passes over all domains' training prefixes"})
    max_steps: int = field(default=0, metadata={"help": "stop after this many optimizer steps in total (0 = no limit)"})
    batch_size: int = field(default=1024, metadata={"help": "global batch = in-batch candidates (release: 8192)"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    weight_decay: float = field(default=0.0, metadata={"help": "Adam weight decay"})
    seed: int = field(default=2020, metadata={"help": "seeds initialisation, shuffling, augmentation, dropout"})
    save_every: int = field(default=10, metadata={"help": "write the checkpoint every N epochs (and at the end)"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:1, ..."})
    resume: bool = field(default=False, metadata={"help": "continue from OUTPUT's last checkpoint"})
    lambda_ss: float = field(default=1e-3, metadata={"help": "weight of the sequence-sequence loss, Eq. (10)"})
    temperature: float = field(default=0.07, metadata={"help": "softmax temperature of both contrastive losses"})
    item_drop_prob: float = field(default=0.9, metadata={"help": "probability a view is item drop (else word drop)"})
    drop_prob: float = field(default=0.2, metadata={"help": "per-item drop / per-position feature swap probability"})
    max_history: int = field(default=50, metadata={"help": "history window (items)"})
    features: str | None = field(default=None, metadata={"help": "feature set name (default: each dataset's default)"})
    all_positions: bool = field(default=False, metadata={"help": "also train on each user's last two items"})
    time_limit_minutes: float = field(default=0.0, metadata={"help": "stop (and checkpoint) after this much training time (0 = none)"})
    init_from: str | None = field(default=None, metadata={"help": "start from this pre-trained checkpoint's weights (fresh optimizer)"})

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
