"""Sequence encoder, Eq. (6)-(7): learned positions, LayerNorm, dropout, causal Transformer layers.

The layer is the SASRec layer of RecBole that the authors' release uses (post-LayerNorm, GELU
feed-forward with no dropout between its two linear maps, LayerNorm eps 1e-12). Attention is
:func:`attention`: ``scaled_dot_product_attention`` where the platform has a fused kernel, written out
where it has none (CPU training with attention dropout).
Histories are left-aligned: position 0 is the oldest item, padding (index 0) comes after the last
real item, and the sequence representation is the output at the last real position.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unisrec.models.dropout import Dropout, dropout


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    """Scaled dot-product attention (Vaswani et al. 2017, Eq. 1; SASRec Eq. 2):
    ``dropout(softmax(q k^T / sqrt(d_h) with masked keys at -inf)) v``.

    ``q`` (B, H, Lq, d_h), ``k`` / ``v`` (B, H, L, d_h), ``mask`` bool broadcastable to (B, H, Lq, L),
    True = may attend (every query row keeps at least one key). With attention dropout on a CPU,
    torch's ``scaled_dot_product_attention`` has no fused kernel and falls back to its math path,
    which computes in float32 and draws the dropout mask with ``bernoulli_``. There it is written out
    instead: the same float32 arithmetic, the output cast back to the inputs' dtype, and
    :func:`unisrec.models.dropout.dropout`'s cheaper masks (other draws). Training steps with large
    attention products (BERT4Rec, S3-Rec's pre-training) take 5-7% less CPU, the others the same
    (results/speed/attention_online_retail.md). Not in bfloat16: oneDNN compiles a bfloat16 kernel per
    matrix shape, and attention shapes change with every batch. Elsewhere (GPU, evaluation, no
    dropout) the fused call."""
    if dropout_p == 0.0 or q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    with torch.autocast("cpu", enabled=False):
        scores = (q.float() * q.shape[-1] ** -0.5) @ k.float().transpose(-1, -2)
        weights = dropout(torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1), dropout_p)
        return (weights @ v.float()).to(v.dtype)


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
        self.out_dropout = Dropout(hidden_dropout)
        self.norm = nn.LayerNorm(hidden_size, eps=eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, L, d); mask (B, 1, L, L) bool, True = may attend."""
        b, l, d = x.shape
        h = self.n_heads

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, l, h, d // h).transpose(1, 2)

        ctx = attention(heads(self.query(x)), heads(self.key(x)), heads(self.value(x)), mask,
                        self.attn_dropout if self.training else 0.0)
        ctx = ctx.transpose(1, 2).reshape(b, l, d)
        return self.norm(self.out_dropout(self.dense(ctx)) + x)


class FeedForward(nn.Module):
    def __init__(self, hidden_size: int, inner_size: int, hidden_dropout: float, eps: float):
        super().__init__()
        self.dense_1 = nn.Linear(hidden_size, inner_size)
        self.dense_2 = nn.Linear(inner_size, hidden_size)
        self.dropout = Dropout(hidden_dropout)
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


def padding_mask(lengths: torch.Tensor, seq_len: int) -> torch.Tensor:
    """(B, 1, 1, L) bool for bidirectional attention: every query may attend every real item.

    Padding keys (j >= length) are masked; padding queries attend the real items too (their
    outputs are never read). A length of 0 keeps key 0 so the softmax is well defined.
    """
    real_key = torch.arange(seq_len, device=lengths.device)[None, :] < lengths.clamp(min=1)[:, None]
    return real_key[:, None, None, :]


@dataclass
class EncoderConfig:
    """The causal Transformer every sequence model here shares (docs/protocol.md "Model").

    Defaults are the paper's / the authors' release: hidden 300, 2 layers, 2 heads, feed-forward
    256, dropout 0.5 / 0.5, LayerNorm eps 1e-12, N(0, 0.02) initialisation, 50 positions.
    """

    hidden_size: int = field(default=300, metadata={"help": "item / sequence vector size d"})
    n_layers: int = field(default=2, metadata={"help": "Transformer layers"})
    n_heads: int = field(default=2, metadata={"help": "attention heads"})
    inner_size: int = field(default=256, metadata={"help": "feed-forward inner size"})
    hidden_dropout: float = field(default=0.5, metadata={"help": "dropout on embeddings and sub-layer outputs"})
    attn_dropout: float = field(default=0.5, metadata={"help": "dropout on attention weights"})
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    max_seq_length: int = field(default=50, metadata={"help": "positions the model has (longest history it reads)"})

    def __post_init__(self) -> None:
        check_sizes(self, hidden_size=(1, 65536), n_layers=(1, 64), n_heads=(1, 1024), inner_size=(1, 262144),
                    max_seq_length=(1, 65536))
        for name in ("hidden_dropout", "attn_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.hidden_size % self.n_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of n_heads {self.n_heads}")


def check_sizes(config: Any, **bounds: tuple[int, int]) -> None:
    """Refuse absurd sizes before anything is allocated (a typo of 2e9 must not eat the machine)."""
    for name, (low, high) in bounds.items():
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")


class SequenceEncoder(nn.Module):
    """Eq. (6)-(7): f_j^0 = v_j + p_j, then LayerNorm, dropout and causal Transformer layers."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.max_seq_length = config.max_seq_length
        self.position_embedding = nn.Embedding(config.max_seq_length, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout)
        self.layers = nn.ModuleList(
            TransformerLayer(config.hidden_size, config.n_heads, config.inner_size, config.hidden_dropout,
                             config.attn_dropout, config.layer_norm_eps)
            for _ in range(config.n_layers)
        )
        self.apply(lambda m: init_weights(m, config.initializer_range))

    def embed(self, item_repr: torch.Tensor) -> torch.Tensor:
        """Eq. (6): item vectors + learned positions, LayerNorm, dropout."""
        l = item_repr.shape[1]
        if l > self.max_seq_length:
            raise ValueError(f"history of length {l} exceeds max_seq_length {self.max_seq_length}")
        return self.dropout(self.norm(item_repr + self.position_embedding.weight[:l].unsqueeze(0)))

    def forward_all(self, item_repr: torch.Tensor, lengths: torch.Tensor, causal: bool = True) -> torch.Tensor:
        """(B, L, d) item vectors of left-aligned histories -> (B, L, d) outputs, one per position.

        Output j depends only on items 0..j (causal), so every prefix is encoded at once.
        ``causal=False`` is bidirectional attention over the real items (BERT4Rec): output j then
        depends on every real item of its sequence.
        """
        x = self.embed(item_repr)
        mask = causal_padding_mask(lengths, x.shape[1]) if causal else padding_mask(lengths, x.shape[1])
        for layer in self.layers:
            x = layer(x, mask)
        return x

    def forward(self, item_repr: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, L, d), (B,) -> (B, d): the output at the last real position (lengths - 1).

        Computed by :meth:`forward_last` (the final layer at that position only): the same function as
        reading :meth:`forward_all` there, at ~2/3 of the cost and less activation memory (Online Retail,
        faithful SASRec steps: 0.67x the CPU time, results/online_retail/memory.md). Only the dropout
        draws of the final layer differ from computing it at every position."""
        return self.forward_last(item_repr, lengths.clamp(min=1))

    def forward_last(self, item_repr: torch.Tensor, lengths: torch.Tensor, causal: bool = True) -> torch.Tensor:
        """The same function as :meth:`forward` (``causal=False``: as reading :meth:`forward_all`'s
        bidirectional output at the last real position), computing the *final* layer at the last
        position only (:func:`layers_at_last_position`; pre-training uses it; tests check values and gradients)."""
        return layers_at_last_position(self.layers, self.embed(item_repr), lengths, causal)

    def forward_at(self, item_repr: torch.Tensor, lengths: torch.Tensor, positions: torch.Tensor, causal: bool = True) -> torch.Tensor:
        """:meth:`forward_all` read at ``positions`` (B, M) -> (B, M, d), the final layer computed
        there only (:func:`layers_at_positions`)."""
        return layers_at_positions(self.layers, self.embed(item_repr), lengths, positions, causal)


def layers_at_last_position(layers: nn.ModuleList, x: torch.Tensor, lengths: torch.Tensor, causal: bool = True) -> torch.Tensor:
    """Transformer ``layers`` over (B, L, d) inputs ``x``, read at position ``lengths - 1``: (B, d).

    :func:`layers_at_positions` with one position per sequence (SASRec, UniSRec, FDSA's two streams,
    S3-Rec's segment passes): about two thirds of the cost of running every layer at every position
    and then reading one row. The last real position attends every real item, causal or not."""
    return layers_at_positions(layers, x, lengths, (lengths - 1)[:, None], causal)[:, 0]


def layers_at_positions(layers: nn.ModuleList, x: torch.Tensor, lengths: torch.Tensor, positions: torch.Tensor,
                        causal: bool = True) -> torch.Tensor:
    """Transformer ``layers`` over (B, L, d) inputs ``x``, read at ``positions`` (B, M): (B, M, d).

    The final layer's keys and values need every position, but its query, output projection,
    residual, LayerNorms and feed-forward are read at the M positions only, so they are computed there
    only (BERT4Rec's Cloze loss reads the masked ~20%). Earlier layers run in full: the keys depend
    on them. ``causal=False``: attention over every real item (:func:`padding_mask`); else a position
    attends the real items up to itself. The same values as :meth:`SequenceEncoder.forward_all` read
    at ``positions`` (tested, with gradients); only the final layer's dropout draws differ."""
    if len(layers) > 1:
        mask = causal_padding_mask(lengths, x.shape[1]) if causal else padding_mask(lengths, x.shape[1])
        for layer in layers[:-1]:
            x = layer(x, mask)
    return layers[-1].ffn(attention_at_positions(layers[-1].attention, x, lengths, positions, causal))


def attention_at_positions(att: SelfAttention, x: torch.Tensor, lengths: torch.Tensor, positions: torch.Tensor,
                           causal: bool = True) -> torch.Tensor:
    """A self-attention sub-layer (with its residual and LayerNorm) over (B, L, d) inputs ``x``, computed
    for the queries at ``positions`` (B, M) only: (B, M, d). Keys and values come from every position."""
    b, l, d = x.shape
    h, m = att.n_heads, positions.shape[1]
    x_at = torch.gather(x, 1, positions[:, :, None].expand(b, m, d))  # (B, M, d)
    q = att.query(x_at).view(b, m, h, d // h).transpose(1, 2)
    k = att.key(x).view(b, l, h, d // h).transpose(1, 2)
    v = att.value(x).view(b, l, h, d // h).transpose(1, 2)
    keys = torch.arange(l, device=x.device)
    key_mask = keys[None, None, :] < lengths.clamp(min=1)[:, None, None]  # (B, 1, L): real items
    if causal:
        key_mask = key_mask & (keys[None, None, :] <= positions[:, :, None])  # (B, M, L)
    ctx = attention(q, k, v, key_mask[:, None], att.attn_dropout if att.training else 0.0)
    return att.norm(att.out_dropout(att.dense(ctx.transpose(1, 2).reshape(b, m, d))) + x_at)


# History-length buckets <=2, 3-4, 5-8, 9-16, 17-32, 33+: a batch's histories are encoded bucket by
# bucket, each padded to its own longest (most training prefixes are short; padding all to 50 wastes
# most of the Transformer's work). Causal attention read at the last real position makes trailing
# padding irrelevant, so this changes no value, only the dropout draws.
LENGTH_BUCKETS = (2, 4, 8, 16, 32)


def length_buckets(lengths: np.ndarray, max_size: int | None = None) -> list[np.ndarray]:
    """Positions of ``lengths`` grouped by :data:`LENGTH_BUCKETS` (stable within a bucket, empty
    buckets dropped); ``max_size`` further cuts each bucket into chunks of at most that many."""
    bucket = np.searchsorted(np.asarray(LENGTH_BUCKETS), lengths, side="left")
    order = np.argsort(bucket, kind="stable")
    groups = [g for g in np.split(order, np.flatnonzero(np.diff(bucket[order])) + 1) if len(g)]
    if max_size is None:
        return groups
    return [g[i : i + max_size] for g in groups for i in range(0, len(g), max_size)]


def encoder_passes(lens: np.ndarray, device: Any, one_pass: bool | None = None) -> list[np.ndarray]:
    """How a step's rows are cut into encoder passes: length buckets on a CPU, one padded pass elsewhere.

    On a CPU the work is the FLOPs, and padding short histories to the step's longest wastes most of
    them, so rows go bucket by bucket (:func:`length_buckets`). On an accelerator a step of
    these sizes is bound by kernel launches, not FLOPs: one padded pass issues a sixth of the launches.
    Trailing padding changes no value (causal attention, or a key mask), only the dropout draws.
    ``one_pass`` overrides the choice (tests compare both).
    """
    if one_pass is None:
        one_pass = torch.device(device).type != "cpu"
    return [np.arange(len(lens))] if one_pass else length_buckets(lens)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """RecBole/BERT initialisation: N(0, std) weights, zero biases, unit LayerNorm."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
    if isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)

