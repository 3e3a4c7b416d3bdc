"""Sequence encoder, Eq. (6)-(7): learned positions, LayerNorm, dropout, causal Transformer layers.

The layer is the SASRec layer of RecBole that the authors' release uses (post-LayerNorm, GELU
feed-forward with no dropout between its two linear maps, LayerNorm eps 1e-12), written with
``scaled_dot_product_attention`` so a fused kernel is used where the platform has one.
Histories are left-aligned: position 0 is the oldest item, padding (index 0) comes after the last
real item, and the sequence representation is the output at the last real position.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttention(nn.Module):
    def __init__(self, hidden_size: int, n_heads: int, attn_dropout: float, hidden_dropout: float, eps: float):
        super().__init__()
        if hidden_size % n_heads:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of n_heads {n_heads}")
        self.n_heads = n_heads
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.attn_dropout = attn_dropout
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.out_dropout = nn.Dropout(hidden_dropout)
        self.norm = nn.LayerNorm(hidden_size, eps=eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, L, d); mask (B, 1, L, L) bool, True = may attend."""
        b, l, d = x.shape
        h = self.n_heads

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, l, h, d // h).transpose(1, 2)

        ctx = F.scaled_dot_product_attention(
            heads(self.query(x)),
            heads(self.key(x)),
            heads(self.value(x)),
            attn_mask=mask,
            dropout_p=self.attn_dropout if self.training else 0.0,
        )
        ctx = ctx.transpose(1, 2).reshape(b, l, d)
        return self.norm(self.out_dropout(self.dense(ctx)) + x)


class FeedForward(nn.Module):
    def __init__(self, hidden_size: int, inner_size: int, hidden_dropout: float, eps: float):
        super().__init__()
        self.dense_1 = nn.Linear(hidden_size, inner_size)
        self.dense_2 = nn.Linear(inner_size, hidden_size)
        self.dropout = nn.Dropout(hidden_dropout)
        self.norm = nn.LayerNorm(hidden_size, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.dropout(self.dense_2(F.gelu(self.dense_1(x)))) + x)


class TransformerLayer(nn.Module):
    """One step of Eq. (7): F^{l+1} = FFN(MHAttn(F^l))."""

    def __init__(self, hidden_size: int, n_heads: int, inner_size: int, hidden_dropout: float, attn_dropout: float, eps: float):
        super().__init__()
        self.attention = SelfAttention(hidden_size, n_heads, attn_dropout, hidden_dropout, eps)
        self.ffn = FeedForward(hidden_size, inner_size, hidden_dropout, eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.ffn(self.attention(x, mask))


def causal_padding_mask(lengths: torch.Tensor, seq_len: int) -> torch.Tensor:
    """(B, 1, L, L) bool: query i may attend key j iff j <= i and j is a real item.

    Padding queries (i >= length) still attend position 0 so their softmax is well defined; their
    outputs are never read.
    """
    pos = torch.arange(seq_len, device=lengths.device)
    causal = pos[None, :] <= pos[:, None]  # (L, L)
    real_key = pos[None, :] < lengths[:, None]  # (B, L)
    mask = causal[None] & real_key[:, None, :]
    mask[:, :, 0] = True
    return mask.unsqueeze(1)


class SequenceEncoder(nn.Module):
    """Eq. (6)-(7): f_j^0 = v_j + p_j, then LayerNorm, dropout and causal Transformer layers."""

    def __init__(
        self,
        hidden_size: int = 300,
        n_layers: int = 2,
        n_heads: int = 2,
        inner_size: int = 256,
        hidden_dropout: float = 0.5,
        attn_dropout: float = 0.5,
        layer_norm_eps: float = 1e-12,
        max_seq_length: int = 50,
        initializer_range: float = 0.02,
    ):
        super().__init__()
        self.max_seq_length = max_seq_length
        self.position_embedding = nn.Embedding(max_seq_length, hidden_size)
        self.norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(hidden_dropout)
        self.layers = nn.ModuleList(
            TransformerLayer(hidden_size, n_heads, inner_size, hidden_dropout, attn_dropout, layer_norm_eps)
            for _ in range(n_layers)
        )
        self.apply(lambda m: init_weights(m, initializer_range))

    @classmethod
    def from_config(cls, config: Any) -> "SequenceEncoder":
        """Build from any config with the encoder's field names (UniSRecConfig, SASRecConfig)."""
        names = ("hidden_size", "n_layers", "n_heads", "inner_size", "hidden_dropout", "attn_dropout",
                 "layer_norm_eps", "max_seq_length", "initializer_range")
        return cls(**{name: getattr(config, name) for name in names})

    def forward_all(self, item_repr: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, L, d) item vectors of left-aligned histories -> (B, L, d) outputs, one per position.

        Output j depends only on items 0..j (causal), so every prefix is encoded at once.
        """
        b, l, _ = item_repr.shape
        if l > self.max_seq_length:
            raise ValueError(f"history of length {l} exceeds max_seq_length {self.max_seq_length}")
        pos = self.position_embedding.weight[:l].unsqueeze(0)
        x = self.dropout(self.norm(item_repr + pos))
        mask = causal_padding_mask(lengths, l)
        for layer in self.layers:
            x = layer(x, mask)
        return x

    def forward(self, item_repr: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, L, d), (B,) -> (B, d): the output at the last real position (lengths - 1)."""
        out = self.forward_all(item_repr, lengths)
        idx = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, out.shape[-1])
        return out.gather(1, idx).squeeze(1)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """RecBole/BERT initialisation: N(0, std) weights, zero biases, unit LayerNorm."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
    if isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)

