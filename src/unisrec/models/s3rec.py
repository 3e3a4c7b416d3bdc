"""S3-Rec (Zhou et al., CIKM 2020) as the UniSRec paper ran it (its release's ``baselines/s3rec.py``).

Two stages on the target domain's own data:

1. **Self-supervised pre-training** with a *bidirectional* Transformer on the training histories
   (every training prefix of every user, as the release's data loader gives them), four objectives
   (S3-Rec Sec. 3.3, "Self-supervised Learning with MIM"), weighted 1.0 / 0.2 / 1.0 / 0.5:
   associated attribute prediction (AAP), masked item prediction (MIP), masked attribute
   prediction (MAP) and segment prediction (SP); each item of a history is masked with
   probability 0.2. The UniSRec authors had no item attributes, so an item's "attribute" is the
   item itself, represented by its frozen text vector through an adapter ``ReLU(W x + b)`` (the
   release's ``MLPLayers([768, 300])``): AAP and MAP become a binary cross-entropy of every
   position's state against the adapted text vector of every item, with the item's own vector as
   the one positive.
2. **Fine-tuning** left to right: the same network read causally, exactly SASRec (``models.sasrec``:
   ID embeddings -> causal encoder -> dot products, cross-entropy over all items), starting from
   the pre-trained weights.

The pre-training stage is a task for the shared epoch loop (``training.loop``) that
``training.supervised.train_model`` runs before fitting (its ``pretraining_task`` hook, into
``OUTPUT/pretrain/``). Its extra parameters -- the adapter, the four objective heads ``W_AAP``,
``W_MIP``, ``W_MAP``, ``W_SP`` and the [mask] embedding -- live in :class:`S3RecPretrainHeads`
and are not part of the model directory: fine-tuning and scoring need none of them.

Differences from the release, on purpose (each keeps the objective's function):

* the release's weight initialisation (``self.apply(_init_weights)``) also reaches the frozen
  text-vector table it holds as an ``nn.Embedding`` and overwrites it with N(0, 0.02) noise, so its
  "attributes" are fixed random codes, not text; here they are the text vectors, as the paper
  describes (``--random-attributes true`` reproduces the release: a fixed N(0, 0.02) table of the
  same shape, drawn from the run's seed);
* pre-training histories are left-aligned (positions 0..n-1, as in fine-tuning); the release pads
  them on the left to 50 in pre-training but on the right in fine-tuning, so its position
  embeddings mean different things in the two stages. The segment context is read at the last
  real item, which is what the release's ``[:, -1]`` reads;
* a batch is encoded in length groups on a CPU, each padded to its own longest history, and in one
  padded pass on a GPU (``models.encoder.encoder_passes``), with the encoder's bidirectional mask
  (``forward_all(..., causal=False)``: every position attends every real item): padding then changes
  no value;
* segment prediction reads each pass at the last real item only, so the final layer is computed
  there only (``S3RecPretrainTask.last_states``): the same values, 1.32x less CPU per Online Retail
  pre-training step (results/speed/read_positions_online_retail.md);
* MIP's negative is any item not in the history; the release's sampler can also draw its own
  [mask] index;
* AAP/MAP score the real items only (the release also scores the padding row, label 0);
* binary cross-entropy is computed from logits (softplus) instead of ``BCELoss(sigmoid(.))``,
  which clamps the log at -100: the same value where that clamp is not hit;
* the loss is the release's sum over positions divided by the number of sequences in the step
  (Adam is invariant to a constant scale of the loss; the log shows per-sequence values).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unisrec.models.encoder import EncoderConfig, check_sizes, encoder_passes, init_weights
from unisrec.models.sasrec import SASRec


@dataclass
class S3RecConfig:
    """The release's ``props/S3Rec.yaml`` (plus the shared Transformer settings)."""

    mask_ratio: float = field(default=0.2, metadata={"help": "pre-training: probability each history item is masked (MIP, MAP)"})
    aap_weight: float = field(default=1.0, metadata={"help": "weight of associated attribute prediction"})
    mip_weight: float = field(default=0.2, metadata={"help": "weight of masked item prediction"})
    map_weight: float = field(default=1.0, metadata={"help": "weight of masked attribute prediction"})
    sp_weight: float = field(default=0.5, metadata={"help": "weight of segment prediction"})
    pretrain_epochs: int = field(default=300, metadata={"help": "self-supervised pre-training epochs before fine-tuning (0 = none: plain SASRec)"})
    pretrain_batch_size: int = field(default=1024, metadata={"help": "pre-training histories per step"})
    pretrain_time_limit_minutes: float = field(default=0.0, metadata={"help": "pre-training wall-time cap (0 = none): no epoch starts that would end past it"})
    random_attributes: bool = field(default=False, metadata={
        "help": "use a fixed N(0, 0.02) table instead of the text vectors as attributes (what the release's initialisation does)"})
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    text_dim: int = field(default=768, metadata={"derived": True})
    num_items: int = field(default=0, metadata={"derived": True})

    def __post_init__(self) -> None:
        check_sizes(self, num_items=(0, 2**31 - 2), text_dim=(1, 65536), pretrain_epochs=(0, 100000),
                    pretrain_batch_size=(1, 2**24))
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        for name in ("aap_weight", "mip_weight", "map_weight", "sp_weight", "pretrain_time_limit_minutes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


# ----------------------------------------------------------------------------- the four objectives
def _binary_cross_entropy_one_positive(logits: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """sum over rows r and columns j of BCE(sigmoid(logits[r, j]), [j == positive[r]]).

    -log sigmoid(z) = softplus(-z) and -log(1 - sigmoid(z)) = softplus(z), so a row's sum is
    sum_j softplus(z_j) - z_positive."""
    return F.softplus(logits).sum() - logits.gather(1, positive.view(-1, 1)).sum()


def associated_attribute_prediction_loss(states: torch.Tensor, attributes: torch.Tensor, items: torch.Tensor,
                                         head: nn.Module) -> torch.Tensor:
    """AAP, S3-Rec Sec. 3.3 "Modeling Item-Attribute Correlation": f_AAP(i, a) = sigma(F_i^T W_AAP a),
    trained as binary cross-entropy with the item's attributes as positives, all others negatives.

    ``states`` (P, d): encoder outputs at *unmasked* history positions; ``attributes`` (A, d): the
    attribute table (here: every item's adapted text vector, row k-1 = item k); ``items`` (P,):
    each position's item (1-based), whose own vector is its one attribute; ``head``: W_AAP.
    Returns the sum over positions and attributes. As in the authors' code, the item side is the
    Transformer output at the item's position, not the raw embedding e_i of the paper's formula."""
    return _binary_cross_entropy_one_positive(head(states) @ attributes.T, items - 1)


def masked_item_prediction_loss(states: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                                head: nn.Module) -> torch.Tensor:
    """MIP, S3-Rec Sec. 3.3 "Modeling Sequence-Item Correlation": f_MIP(i, F_t) = sigma(F_t^T W_MIP e_i)
    at each masked position t, the masked item against a sampled negative, as the authors' code
    implements it: -log sigma(f_MIP(i_t, F_t) - f_MIP(i^-, F_t)) (a BCE of the difference of two
    sigmoids against 1).

    ``states`` (P, d): outputs at masked positions; ``positive`` / ``negative`` (P, d): ID
    embeddings of the masked item and of the negative. Returns the sum over positions."""
    h = head(states)
    pos = torch.sigmoid((h * positive).sum(-1))
    neg = torch.sigmoid((h * negative).sum(-1))
    return F.softplus(-(pos - neg)).sum()


def masked_attribute_prediction_loss(states: torch.Tensor, attributes: torch.Tensor, items: torch.Tensor,
                                     head: nn.Module) -> torch.Tensor:
    """MAP, S3-Rec Sec. 3.3 "Modeling Sequence-Attribute Correlation": f_MAP(a, F_t) = sigma(F_t^T W_MAP a)
    -- recover the attributes of the *masked* item at position t from its context; binary
    cross-entropy over all attributes, the masked item's own as the positive.

    ``states`` (P, d): outputs at masked positions; ``attributes``, ``items`` as in
    :func:`associated_attribute_prediction_loss`; ``head``: W_MAP. Returns the sum."""
    return _binary_cross_entropy_one_positive(head(states) @ attributes.T, items - 1)


def segment_prediction_scores(context: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                              head: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """SP's pair scores s^T W_SP s~ (before the sigmoid) of each sequence with its own segment and
    with another sequence's segment (see :func:`segment_prediction_loss`)."""
    c = head(context)
    return (c * positive).sum(-1), (c * negative).sum(-1)


def segment_prediction_loss(context: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                            head: nn.Module) -> torch.Tensor:
    """SP, S3-Rec Sec. 3.3 "Modeling Sequence-Segment Correlation": f_SP(s, s~) = sigma(s^T W_SP s~),
    the sequence with a segment masked (``context``) against the segment itself (``positive``)
    and a segment of another sequence (``negative``), each the encoder output at the last position;
    as in the authors' code: -log sigma(f_SP(s, s~) - f_SP(s, s~^-)). Returns the sum over sequences.

    Kept as the release has it, though the inner sigmoid saturates: on Scientific both scores reach
    ~57 within the first pre-training epoch, sigma' ~ 1e-25, so SP sits at ln 2 with no gradient
    (measured in results/table3/s3rec_zesrec.md)."""
    own, other = segment_prediction_scores(context, positive, negative, head)
    return F.softplus(-(torch.sigmoid(own) - torch.sigmoid(other))).sum()


# ----------------------------------------------------------------------------- the model
class S3Rec(SASRec):
    """Fine-tuned S3-Rec: SASRec's network (``models.sasrec``) plus the pre-training stage it starts from."""

    model_type = "s3rec"
    config_class = S3RecConfig
    uses_text = True  # the pre-training attributes are the text vectors

    def __init__(self, config: S3RecConfig):
        super().__init__(config)  # type: ignore[arg-type]  # SASRec reads encoder + num_items only
        self.register_buffer("item_features", torch.zeros(1, config.text_dim), persistent=False)


    def feature_rows(self) -> int:
        """One text vector (pre-training attribute) per item of the ID table, plus padding."""
        return self.config.num_items + 1

    def pretraining_task(self, dataset: Any, train: Any, device: torch.device) -> "S3RecPretrainTask | None":
        """The self-supervised stage as a ``training.loop`` task (None when ``pretrain_epochs`` is 0)."""
        if self.config.pretrain_epochs == 0:
            return None
        return S3RecPretrainTask(self, dataset, train, device)


class S3RecPretrainHeads(nn.Module):
    """Parameters only pre-training uses: the text adapter, W_AAP/W_MIP/W_MAP/W_SP and [mask]."""

    def __init__(self, text_dim: int, hidden: int, std: float):
        super().__init__()
        self.adapter = nn.Linear(text_dim, hidden)
        self.aap = nn.Linear(hidden, hidden)
        self.mip = nn.Linear(hidden, hidden)
        self.map = nn.Linear(hidden, hidden)
        self.sp = nn.Linear(hidden, hidden)
        self.mask_embedding = nn.Parameter(torch.zeros(1, hidden))
        self.apply(lambda m: init_weights(m, std))
        nn.init.normal_(self.mask_embedding, std=std)

    def attributes(self, features: torch.Tensor) -> torch.Tensor:
        """Adapted attribute vectors ReLU(W x + b) of the real items (the release's one-layer MLPLayers)."""
        return F.relu(self.adapter(features[1:]))


@dataclass
class PretrainBatch:
    """One step's inputs, built in numpy from a step-seeded generator (resume is exact)."""

    masked: np.ndarray  # (B, W) history with masked positions set to MASK
    mask: np.ndarray  # (B, W) bool
    negatives: np.ndarray  # (B, W) a negative item at each masked position (0 elsewhere)
    seg_context: np.ndarray  # (B, W) history with the segment masked
    seg_positive: np.ndarray  # (B, W) MASK everywhere but the segment
    seg_negative: np.ndarray  # (B, W) MASK everywhere but another history's segment, same place


def make_pretrain_batch(hist: np.ndarray, lens: np.ndarray, num_items: int, mask_ratio: float,
                        rng: np.random.Generator) -> PretrainBatch:
    """The release's ``reconstruct_pretrain_data`` for left-aligned histories, vectorised.

    ``MASK`` is index ``num_items + 1``. Each real position is masked with probability
    ``mask_ratio``; a masked position gets a negative item not in its history. A history of >= 2
    items gets a segment of length L ~ U{1..n//2} starting at U{0..n-L}; its negative is the
    same-length run starting at a uniform offset of the batch's histories laid end to end."""
    b, w = hist.shape
    mask_id = num_items + 1
    cols = np.arange(w)[None, :]
    real = cols < lens[:, None]
    mask = real & (rng.random((b, w)) < mask_ratio)
    masked = np.where(mask, mask_id, hist)
    negatives = np.zeros_like(hist)
    todo = mask.copy()
    for _ in range(100):  # redraw the few negatives that hit the history
        if not todo.any():
            break
        draw = rng.integers(1, num_items + 1, size=(b, w))
        negatives = np.where(todo, draw, negatives)
        hit = (negatives[:, :, None] == np.where(real, hist, -1)[:, None, :]).any(-1)
        todo = todo & hit
    # segments
    seg_len = np.where(lens >= 2, rng.integers(1, np.maximum(lens // 2, 1) + 1), 0)
    start = rng.integers(0, np.maximum(lens - seg_len, 0) + 1)
    long_seq = hist[real]  # the batch's histories end to end
    neg_start = rng.integers(0, np.maximum(len(long_seq) - seg_len, 0) + 1)
    in_seg = (cols >= start[:, None]) & (cols < (start + seg_len)[:, None])
    eligible = (lens >= 2)[:, None]
    seg_context = np.where(eligible & in_seg, mask_id, hist)
    seg_positive = np.where(eligible & real & ~in_seg, mask_id, hist)
    neg_values = long_seq[np.clip(neg_start[:, None] + cols - start[:, None], 0, max(len(long_seq) - 1, 0))]
    seg_negative = np.where(eligible & in_seg, neg_values, np.where(eligible & real, mask_id, hist))
    return PretrainBatch(masked, mask, negatives, seg_context, seg_positive, seg_negative)


class S3RecPretrainTask:
    """S3-Rec's pre-training for ``training.loop.train_loop``: shuffled training histories, the
    weighted sum of the four objectives; no validation (the release pre-trains a fixed number of epochs).

    Besides the loop's task protocol it tells the stage runner (``training.supervised``) what to
    optimise and for how long: ``module`` (model + heads), ``epochs``, ``lr``, ``time_limit_minutes``."""

    unit = "sequences"
    extra_names = ("aap", "mip", "map", "sp")

    def __init__(self, model: S3Rec, dataset: Any, train: Any, device: torch.device):
        cfg = model.config
        self.model, self.device, self.seed = model, device, int(train.seed)
        self.heads = S3RecPretrainHeads(cfg.text_dim, cfg.encoder.hidden_size, cfg.encoder.initializer_range)
        self.module = nn.ModuleDict({"model": model, "heads": self.heads}).to(device)
        if cfg.random_attributes:  # the release's accident: its init overwrites the text table with noise
            gen = torch.Generator().manual_seed(self.seed)
            table = torch.randn(cfg.num_items + 1, cfg.text_dim, generator=gen) * cfg.encoder.initializer_range
            self.features = table.to(device)
        else:
            self.features = model.item_features.to(device)
        hist, self.lens, _ = dataset.examples("train", train.max_history)
        self.hist = hist.astype(np.int64)
        keep = self.lens > 0
        self.hist, self.lens = self.hist[keep], self.lens[keep]
        self.epochs, self.lr, self.time_limit_minutes = cfg.pretrain_epochs, train.lr, cfg.pretrain_time_limit_minutes
        self.batch_size, self.current_epoch = cfg.pretrain_batch_size, 1

    def batches(self, epoch: int) -> list[tuple[int, np.ndarray]]:
        """(step, history indices) of epoch ``epoch``: the same list for the same seed and epoch."""
        self.module.train()
        self.current_epoch = epoch
        perm = np.random.default_rng([self.seed, 31, epoch]).permutation(len(self.lens))
        return list(enumerate(perm[i : i + self.batch_size] for i in range(0, len(perm), self.batch_size)))

    def step_loss(self, batch: tuple[int, np.ndarray]) -> tuple[torch.Tensor, int, dict[str, float]]:
        step, idx = batch
        rng = np.random.default_rng([self.seed, 37, self.current_epoch, step])  # masks and negatives: exact on resume
        lens = self.lens[idx]
        hist = self.hist[idx, : int(lens.max())]
        losses = self.losses(make_pretrain_batch(hist, lens, self.model.num_items, self.model.config.mask_ratio, rng), hist, lens)
        cfg = self.model.config
        total = (cfg.aap_weight * losses["aap"] + cfg.mip_weight * losses["mip"] + cfg.map_weight * losses["map"]
                 + cfg.sp_weight * losses["sp"]) / len(idx)
        return total, len(idx), {k: float(v.detach()) / len(idx) for k, v in losses.items()}

    def by_length(self, seqs: np.ndarray, lens: np.ndarray, table: torch.Tensor, forward: Any) -> list[tuple[np.ndarray, torch.Tensor]]:
        """``forward(embedded, lengths)`` over left-aligned histories in length groups: [(rows, output)],
        each group trimmed to its own longest history (``models.encoder.encoder_passes``)."""
        out = []
        for g in encoder_passes(lens, self.device):
            width = int(lens[g].max())
            seq = torch.from_numpy(seqs[g, :width]).to(self.device)
            out.append((g, forward(table[seq], torch.from_numpy(lens[g]).to(self.device))))
        return out

    def encode(self, seqs: np.ndarray, lens: np.ndarray, table: torch.Tensor) -> list[tuple[np.ndarray, torch.Tensor]]:
        """Bidirectional outputs of left-aligned histories in length groups: [(rows, (b, w, d) outputs)]
        (callers pick the positions they need)."""
        return self.by_length(seqs, lens, table, lambda x, n: self.model.encoder.forward_all(x, n, causal=False))

    def losses(self, batch: PretrainBatch, hist: np.ndarray, lens: np.ndarray) -> dict[str, torch.Tensor]:
        """The four objectives (sums) of one step."""
        dev = self.device
        table = torch.cat([self.model.item_embedding.weight, self.heads.mask_embedding])  # row num_items + 1 = [mask]
        attributes = self.heads.attributes(self.features)
        real = np.arange(hist.shape[1])[None, :] < lens[:, None]
        picked: dict[str, list[Any]] = {k: [] for k in ("un", "un_items", "m", "m_items", "m_neg")}
        for g, out in self.encode(batch.masked, lens, table):
            w = out.shape[1]
            un, m = torch.from_numpy(real[g, :w] & ~batch.mask[g, :w]).to(dev), torch.from_numpy(batch.mask[g, :w]).to(dev)
            items, negs = torch.from_numpy(hist[g, :w]).to(dev), torch.from_numpy(batch.negatives[g, :w]).to(dev)
            picked["un"].append(out[un])
            picked["un_items"].append(items[un])
            picked["m"].append(out[m])
            picked["m_items"].append(items[m])
            picked["m_neg"].append(negs[m])
        cat = {k: torch.cat(v) for k, v in picked.items()}
        aap = associated_attribute_prediction_loss(cat["un"], attributes, cat["un_items"], self.heads.aap)
        mip = masked_item_prediction_loss(cat["m"], table[cat["m_items"]], table[cat["m_neg"]], self.heads.mip)
        map_ = masked_attribute_prediction_loss(cat["m"], attributes, cat["m_items"], self.heads.map)

        sp = segment_prediction_loss(*(self.last_states(s, lens, table) for s in
                                       (batch.seg_context, batch.seg_positive, batch.seg_negative)), self.heads.sp)
        return {"aap": aap, "mip": mip, "map": map_, "sp": sp}

    def last_states(self, seqs: np.ndarray, lens: np.ndarray, table: torch.Tensor) -> torch.Tensor:
        """(B, d): each history's bidirectional output at its last real item, in length-group order
        (the same order for every ``seqs`` of the same ``lens``). SP's three passes read only that
        position, so the final layer is computed there only (``SequenceEncoder.forward_last``): the
        same values as :meth:`encode` read there, less work; only the final layer's dropout draws differ."""
        return torch.cat([h for _, h in self.by_length(seqs, lens, table,
                                                      lambda x, n: self.model.encoder.forward_last(x, n, causal=False))])

    def validate(self) -> None:
        return None

    def checkpointed(self, run: Any) -> None:
        pass
