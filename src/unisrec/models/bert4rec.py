"""BERT4Rec (Sun et al., CIKM 2019) as the UniSRec paper ran it: Table 3's BERT4Rec column.

Item-ID embeddings plus a ``[MASK]`` token row, learned positions, the same Transformer layers as
SASRec but with **bidirectional** attention (padding masked), trained with the Cloze task: random
items of a training sequence are replaced by ``[MASK]`` and predicted from both sides
(cross-entropy over all items at the masked positions, ``training.batching.ClozePrefixBatching``:
by default, as in RecBole, every training prefix is a sample; ``--batching cloze`` takes each
user's training part once instead, as in the BERT4Rec paper).
At inference ``[MASK]`` is appended after the history and its output scores every item
(:meth:`BERT4Rec.sequence_representation` does it, so evaluation and serving treat the model like
any other). The encoder has ``max_seq_length + 1`` positions so a full history of
``max_seq_length`` items still has room for the appended token.

Two variants (``BERT4RecConfig.variant``):

* ``paper`` -- what Table 3's number came from (RecBole <= 1.1, which the authors ran): the
  encoder output at ``[MASK]`` is dotted with the item table directly, no output bias, and no
  training sample masks only its last item.
* ``corrected`` (default) -- later RecBole (1.2) and the BERT4Rec paper's output layer, Eq. (7):
  ``GELU(h W^P + b^P)`` (+ LayerNorm, as in the authors' TensorFlow code and RecBole 1.2) dotted
  with the item table plus an output bias ``b^O`` per item; and a share ``last_item_share`` of the
  training samples mask only their last item, which is exactly the inference situation.

Differences from RecBole (both versions), deliberate:

* with ``--batching cloze`` a training sample is a user's training part (the items before the
  validation item, the last ``max_history`` of them), as in the BERT4Rec paper, and an epoch holds
  ~4x fewer samples than RecBole's (Scientific: 5 steps instead of 17). Measured: with patience 10
  that stops both variants at popularity level (results/table3/), so the default, ``cloze-prefix``,
  masks every training prefix as RecBole's sequential data augmentation does;
* every sample masks at least one item (RecBole can draw none, and then that sample adds nothing);
* the training loss computes the final Transformer layer at the masked positions only
  (:meth:`BERT4Rec.bidirectional_outputs_at`): the values RecBole reads there, 1.29-1.35x less CPU per
  Online Retail step (results/speed/read_positions_online_retail.md);
* RecBole 1.2 draws the last-item-only choice once per *batch*; here it is drawn per sample;
* the padding column and the ``[MASK]`` row are never candidates, in training or ranking
  (RecBole keeps padding as a softmax competitor; it also leaves ``[MASK]`` out of the candidates);
* masks come from ``np.random.default_rng([seed, epoch])`` (reproducible, resumable), not Python's
  global ``random``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from unisrec.models.base import SequentialRecommender
from unisrec.models.encoder import EncoderConfig, SequenceEncoder, check_sizes, init_weights

Variant = Literal["paper", "corrected"]
VARIANTS: tuple[str, ...] = get_args(Variant)


@dataclass
class BERT4RecConfig:
    """Table 3's setting: the shared Transformer sizes (hidden 300, 2 layers, 2 heads, inner 256,
    dropout 0.5/0.5, GELU, 50 history items) and RecBole's mask ratio 0.2."""

    variant: Variant = field(default="corrected", metadata={
        "help": "paper = RecBole <= 1.1 as the UniSRec paper ran it (no last-item samples, no output "
        "layer/bias); corrected = later RecBole (last-item samples, GELU output layer + item bias)"})
    mask_ratio: float = field(default=0.2, metadata={"help": "probability that a training item is replaced by [MASK]"})
    last_item_share: float = field(default=0.5, metadata={
        "help": "corrected variant: share of training samples that mask only their last item (RecBole 1.2's ft_ratio)"})
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    num_items: int = field(default=0, metadata={"derived": True})  # items 1..n; row n + 1 is [MASK]

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be paper or corrected, got {self.variant!r}")
        if not 0.0 < self.mask_ratio <= 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1], got {self.mask_ratio}")
        if not 0.0 <= self.last_item_share <= 1.0:
            raise ValueError(f"last_item_share must be in [0, 1], got {self.last_item_share}")
        check_sizes(self, num_items=(0, 2**31 - 3))


@dataclass(frozen=True)
class ClozeSettings:
    """What the Cloze batching needs from the model (so the variant is set in one place)."""

    mask_token: int
    mask_ratio: float
    last_item_share: float


class BERT4Rec(SequentialRecommender):
    model_type = "bert4rec"
    config_class = BERT4RecConfig

    def __init__(self, config: BERT4RecConfig):
        super().__init__()
        if config.num_items < 1:
            raise ValueError("BERT4RecConfig.num_items must be the number of items of the domain")
        self.config = config
        enc = config.encoder
        # rows: 0 padding, 1..n items, n + 1 the [MASK] token
        self.item_embedding = nn.Embedding(config.num_items + 2, enc.hidden_size, padding_idx=0)
        init_weights(self.item_embedding, enc.initializer_range)
        # one more position than history items: the [MASK] appended at inference
        self.encoder = SequenceEncoder(dataclasses.replace(enc, max_seq_length=enc.max_seq_length + 1))
        self.output_dense: nn.Linear | None = None
        self.output_norm: nn.LayerNorm | None = None
        self.output_bias: nn.Parameter | None = None
        if config.variant == "corrected":
            self.output_dense = nn.Linear(enc.hidden_size, enc.hidden_size)
            init_weights(self.output_dense, enc.initializer_range)
            self.output_norm = nn.LayerNorm(enc.hidden_size, eps=enc.layer_norm_eps)
            self.output_bias = nn.Parameter(torch.zeros(config.num_items + 1))

    @classmethod
    def for_dataset(cls, config: BERT4RecConfig, num_items: int, features: Any = None) -> "BERT4Rec":
        return cls(dataclasses.replace(config, num_items=num_items))

    @property
    def num_items(self) -> int:
        return self.config.num_items

    @property
    def mask_token(self) -> int:
        return self.config.num_items + 1

    def cloze_settings(self) -> ClozeSettings:
        """The Cloze task of this model's variant (read by ``training.batching.ClozeBatching``)."""
        share = self.config.last_item_share if self.config.variant == "corrected" else 0.0
        return ClozeSettings(self.mask_token, self.config.mask_ratio, share)

    # ------------------------------------------------------------------ items
    def item_representations(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """The ID table (num_items + 1, d), row 0 = padding; the [MASK] row is not part of it, so it
        is never a candidate."""
        if items is None:
            return self.item_embedding.weight[: self.num_items + 1]
        return self.item_embedding(items)

    # --------------------------------------------------------------- sequences
    def bidirectional_outputs(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, L, d) outputs for left-aligned sequences that may hold [MASK] (id ``num_items + 1``).

        BERT4Rec Sec. 3.3-3.4: h_i^0 = v_i + p_i (LayerNorm, dropout), then L Transformer layers,
        Eq. (5)-(6), with every real position attending every real position (no causal mask);
        the ``corrected`` variant then applies the output transform of Eq. (7).
        """
        h = self.encoder.forward_all(self.item_embedding(item_seq), lengths, causal=False)
        return self.output_transform(h)

    def bidirectional_outputs_at(self, item_seq: torch.Tensor, lengths: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """:meth:`bidirectional_outputs` read at ``positions`` (B, M) -> (B, M, d), the final layer
        computed at those positions only (``SequenceEncoder.forward_at``): the Cloze loss reads the
        masked ~20% of them. The same values; only the final layer's dropout draws differ."""
        return self.output_transform(self.encoder.forward_at(self.item_embedding(item_seq), lengths, positions, causal=False))

    def output_transform(self, h: torch.Tensor) -> torch.Tensor:
        """BERT4Rec Eq. (7), the part before the item table: GELU(h W^P + b^P), then LayerNorm as in
        the authors' code and RecBole 1.2 (``corrected``); the identity in the ``paper`` variant
        (RecBole <= 1.1 scored the Transformer output directly)."""
        if self.output_dense is None:
            return h
        return self.output_norm(F.gelu(self.output_dense(h)))

    def append_mask(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, L) histories -> (B, L + 1) with [MASK] right after each history's last real item."""
        seq = torch.cat([item_seq, item_seq.new_zeros(item_seq.shape[0], 1)], dim=1)
        seq[torch.arange(seq.shape[0], device=seq.device), lengths] = self.mask_token
        return seq

    def sequence_representation(
        self, item_seq: torch.Tensor, lengths: torch.Tensor, item_table: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, d): the output at a [MASK] appended after the history (BERT4Rec Sec. 3.6, test).

        ``item_table`` is accepted for the common interface; the inputs are read from the full
        embedding (it holds the [MASK] row the table leaves out).
        """
        seq = self.append_mask(item_seq, lengths)
        out = self.bidirectional_outputs(seq, lengths + 1)
        return out[torch.arange(out.shape[0], device=out.device), lengths]

    # ------------------------------------------------------------------ scores
    def scores(self, seq_repr: torch.Tensor, item_table: torch.Tensor) -> torch.Tensor:
        """BERT4Rec Eq. (7) logits: <h, e_i> (+ b^O_i in ``corrected``) for every item; padding -inf.

        ``item_table`` has num_items + 1 rows, so [MASK] is never scored."""
        logits = seq_repr @ item_table.T
        if self.output_bias is not None:
            logits = logits + self.output_bias
        logits[:, 0] = float("-inf")
        return logits
