"""SASRec (Kang & McAuley, ICDM 2018) as the UniSRec paper ran it (docs/protocol.md "The SASRec baseline").

Learned item-ID embeddings -> the same causal :class:`~unisrec.models.encoder.SequenceEncoder` as
UniSRec (hidden 300, 2 layers, 2 heads, feed-forward 256, dropout 0.5) -> dot-product scores
against the ID table, trained with cross-entropy over all items (RecBole's ``loss_type="CE"``).

Differences from RecBole's SASRec: the padding column is excluded from the training softmax as
well as from ranking (RecBole keeps row 0 as a softmax competitor during training; it can never be
a target, so this only removes a useless logit).
"""

from __future__ import annotations

from dataclasses import dataclass, field


import torch
from torch import nn

from unisrec.models.base import SequentialRecommender
from unisrec.models.encoder import EncoderConfig, SequenceEncoder, check_sizes, init_weights


@dataclass
class SASRecConfig:
    """The paper's SASRec setting (same Transformer as UniSRec)."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    num_items: int = field(default=0, metadata={"derived": True})  # the ID table has num_items + 1 rows

    def __post_init__(self) -> None:
        check_sizes(self, num_items=(0, 2**31 - 2))


class SASRec(SequentialRecommender):
    model_type = "sasrec"
    config_class = SASRecConfig

    def __init__(self, config: SASRecConfig):
        super().__init__()
        if config.num_items < 1:
            raise ValueError("SASRecConfig.num_items must be the number of items of the domain")
        self.config = config
        self.item_embedding = nn.Embedding(config.num_items + 1, config.encoder.hidden_size, padding_idx=0)
        init_weights(self.item_embedding, config.encoder.initializer_range)
        self.encoder = SequenceEncoder(config.encoder)

    @property
    def num_items(self) -> int:
        return self.config.num_items

    def item_representations(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """The ID embedding table (num_items + 1, d), or the rows of ``items``."""
        return self.item_embedding.weight if items is None else self.item_embedding(items)

    def sequence_representation(
        self, item_seq: torch.Tensor, lengths: torch.Tensor, item_table: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, d): encoder output at each history's last real item."""
        item_repr = self.item_embedding(item_seq) if item_table is None else item_table[item_seq]
        return self.encoder(item_repr, lengths)

    def scores(self, seq_repr: torch.Tensor, item_table: torch.Tensor) -> torch.Tensor:
        """Dot product <s, e_i> against every item; column 0 (padding) is -inf."""
        logits = seq_repr @ item_table.T
        logits[:, 0] = float("-inf")
        return logits
