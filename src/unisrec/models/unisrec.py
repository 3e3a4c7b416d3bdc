"""UniSRec: MoE-adapted text items -> causal Transformer -> cosine scores, Eq. (6)-(12).

Read top to bottom: the config, the model (item table, sequence representation, scores), then
save/load. The pre-training losses (Eq. 8-10) live in ``unisrec.training.losses``; this file is
the network and its scoring rule.

Text features are not parameters: they are a frozen (num_items + 1, text_dim) table handed to the
model with :meth:`UniSRec.set_item_features` (row 0 = padding) and are not written to
``model.safetensors``. A model directory keeps them beside the weights (see training/serving).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unisrec.models.adaptor import MoEAdaptor
from unisrec.models.checkpoint import load_checkpoint, save_checkpoint
from unisrec.models.encoder import SequenceEncoder, init_weights

MODES = ("inductive", "transductive")


@dataclass
class UniSRecConfig:
    """Paper / reference-release defaults (SPEC "Model")."""

    text_dim: int = 768
    hidden_size: int = 300
    n_layers: int = 2
    n_heads: int = 2
    inner_size: int = 256
    hidden_dropout: float = 0.5
    attn_dropout: float = 0.5
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    max_seq_length: int = 50
    n_experts: int = 8
    adaptor_dropout: float = 0.2
    noisy_gating: bool = True
    temperature: float = 0.07
    mode: str = "inductive"  # "inductive" (UniSRec_t, Eq. 11) or "transductive" (UniSRec_t+ID, Eq. 12)
    num_items: int = 0  # size of the ID table in transductive mode (padding excluded)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UniSRecConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class UniSRec(nn.Module):
    def __init__(self, config: UniSRecConfig):
        super().__init__()
        self.config = config
        self.adaptor = MoEAdaptor(
            config.text_dim,
            config.hidden_size,
            config.n_experts,
            config.adaptor_dropout,
            config.noisy_gating,
            config.initializer_range,
        )
        self.encoder = SequenceEncoder.from_config(config)
        self.item_id_embedding: nn.Embedding | None = None
        if config.mode == "transductive":
            self.item_id_embedding = nn.Embedding(config.num_items + 1, config.hidden_size, padding_idx=0)
            init_weights(self.item_id_embedding, config.initializer_range)
            with torch.no_grad():
                self.item_id_embedding.weight[0].zero_()
        self.register_buffer("item_features", torch.zeros(1, config.text_dim), persistent=False)

    # ------------------------------------------------------------------ items
    def set_item_features(self, features: Any) -> None:
        """The frozen text features x_i (Eq. 1) as a (num_items + 1, text_dim) table, row 0 = padding."""
        feats = torch.as_tensor(features, dtype=torch.float32)
        if feats.ndim != 2 or feats.shape[1] != self.config.text_dim:
            raise ValueError(f"features of shape {tuple(feats.shape)} do not match text_dim {self.config.text_dim}")
        if self.item_id_embedding is not None and feats.shape[0] != self.item_id_embedding.num_embeddings:
            raise ValueError(
                f"{feats.shape[0] - 1} items of features but the ID table has {self.item_id_embedding.num_embeddings - 1}"
            )
        self.item_features = feats.to(self.item_features.device)

    @property
    def num_items(self) -> int:
        return self.item_features.shape[0] - 1

    def item_representations(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """Adapted item vectors v_i (Eq. 3), plus the ID embedding e_i in transductive mode (Eq. 12).

        ``items=None`` adapts the whole table (num_items + 1, d); otherwise the given indices.
        Padding rows come out as whatever the adaptor maps a zero vector to; they are masked by
        the callers (attention mask, -inf score).
        """
        x = self.item_features if items is None else self.item_features[items]
        v = self.adaptor(x)
        if self.item_id_embedding is not None:
            v = v + (self.item_id_embedding.weight if items is None else self.item_id_embedding(items))
        return v

    # --------------------------------------------------------------- sequences
    def sequence_representation(
        self, item_seq: torch.Tensor, lengths: torch.Tensor, item_table: torch.Tensor | None = None
    ) -> torch.Tensor:
        """s (B, d): the encoder output at each history's last real item (Eq. 6-7), not normalised.

        ``item_table`` is a precomputed ``item_representations()``; passing it lets a training
        step adapt every item once and gather, instead of adapting each sequence position.
        """
        if item_table is None:
            item_repr = self.item_representations(item_seq)
        else:
            item_repr = item_table[item_seq]
        return self.encoder(item_repr, lengths)

    # ------------------------------------------------------------------ scores
    def scores(self, seq_repr: torch.Tensor, item_table: torch.Tensor) -> torch.Tensor:
        """Eq. (11)/(12): cos(s, v_i) / temperature against every row of ``item_table``.

        Column 0 (padding) is set to -inf so it is never recommended nor a softmax competitor.
        """
        s = F.normalize(seq_repr, dim=-1)
        v = F.normalize(item_table, dim=-1)
        logits = s @ v.T / self.config.temperature
        logits[:, 0] = float("-inf")
        return logits

    def forward(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, L) left-aligned histories -> (B, num_items + 1) logits over the whole catalogue."""
        table = self.item_representations()
        return self.scores(self.sequence_representation(item_seq, lengths, table), table)

    # ------------------------------------------------------------- transfer
    def freeze_for_transfer(self) -> None:
        """SPEC "Fine-tuning": freeze the Transformer layers and position embeddings; the MoE
        adaptor, the input LayerNorm and (transductive) the ID table stay trainable."""
        for p in self.encoder.layers.parameters():
            p.requires_grad_(False)
        self.encoder.position_embedding.weight.requires_grad_(False)

    # ----------------------------------------------------------- save / load
    def save_pretrained(self, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
        """Write ``config.json`` (model config under "model", plus ``extra``) and ``model.safetensors``."""
        return save_checkpoint(self, path, "unisrec", self.config, extra)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **overrides: Any) -> "UniSRec":
        """Load a directory written by :meth:`save_pretrained`; ``overrides`` change config fields
        (e.g. ``mode="transductive", num_items=N`` to add a fresh ID table when transferring)."""
        model_cfg, state = load_checkpoint(path, "unisrec")
        model_cfg = {**model_cfg, **overrides}
        model = cls(UniSRecConfig.from_dict(model_cfg))
        own = model.state_dict()
        # A pre-trained checkpoint carries no (or another domain's) ID table: keep the fresh one.
        state = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        missing = [k for k in own if k not in state and not k.startswith("item_id_embedding")]
        if missing:
            raise ValueError(f"{Path(path)} lacks weights for: {', '.join(missing)}")
        model.load_state_dict(state, strict=False)
        return model
