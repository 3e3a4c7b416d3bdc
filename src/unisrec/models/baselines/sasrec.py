"""SASRec (Kang & McAuley, ICDM 2018) as the UniSRec paper ran it (SPEC "The SASRec baseline").

Learned item-ID embeddings -> the same causal :class:`~unisrec.models.encoder.SequenceEncoder` as
UniSRec (hidden 300, 2 layers, 2 heads, feed-forward 256, dropout 0.5) -> dot-product scores
against the ID table, trained with cross-entropy over all items (RecBole's ``loss_type="CE"``).

It exposes the same scoring interface as :class:`~unisrec.models.unisrec.UniSRec`
(``item_representations``, ``sequence_representation``, ``scores``) so the training loop and the
full-ranking evaluation treat both alike. Differences from RecBole's SASRec: the padding column is
excluded from the training softmax as well as from ranking (RecBole keeps row 0 as a softmax
competitor during training; it can never be a target, so this only removes a useless logit).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unisrec.models.checkpoint import load_checkpoint, save_checkpoint
from unisrec.models.encoder import SequenceEncoder, init_weights


@dataclass
class SASRecConfig:
    """The paper's SASRec setting (same Transformer as UniSRec)."""

    num_items: int = 0  # real items; the ID table has num_items + 1 rows (row 0 = padding)
    hidden_size: int = 300
    n_layers: int = 2
    n_heads: int = 2
    inner_size: int = 256
    hidden_dropout: float = 0.5
    attn_dropout: float = 0.5
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    max_seq_length: int = 50

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SASRecConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class SASRec(nn.Module):
    def __init__(self, config: SASRecConfig):
        super().__init__()
        if config.num_items < 1:
            raise ValueError("SASRecConfig.num_items must be the number of items of the domain")
        self.config = config
        self.item_embedding = nn.Embedding(config.num_items + 1, config.hidden_size, padding_idx=0)
        init_weights(self.item_embedding, config.initializer_range)
        self.encoder = SequenceEncoder.from_config(config)

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

    def forward(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        table = self.item_representations()
        return self.scores(self.sequence_representation(item_seq, lengths, table), table)

    # ----------------------------------------------------------- save / load
    def save_pretrained(self, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
        """``config.json`` ({"model_type": "sasrec", "model": {...}} + ``extra``) and ``model.safetensors``."""
        return save_checkpoint(self, path, "sasrec", self.config, extra)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "SASRec":
        model_cfg, state = load_checkpoint(path, "sasrec")
        model = cls(SASRecConfig.from_dict(model_cfg))
        model.load_state_dict(state)
        return model
