"""Universal item representation: parametric whitening + mixture-of-experts adaptor, Eq. (2)-(5).

The adaptor is item-wise: it maps a frozen text feature x_i (Eq. 1) to a d-dim item vector v_i.
Because it never looks at the sequence, callers adapt the item table (or the batch's unique items)
once per step and gather, instead of re-adapting every position of every sequence as the authors'
release does; the result per item is the same function.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unisrec.models.dropout import Dropout


class ParametricWhitening(nn.Module):
    """Eq. (2): x~ = (x - b) W_1, with dropout on x (0.2 in the paper's setting).

    Unlike BERT-whitening this is learned, so it can adapt to each domain during fine-tuning.

    ``whitening=False`` is the ablation "w/o parametric whitening" (docs/analyses.md): the learned
    bias b is dropped -- no ``bias`` parameter exists, so the expert has exactly ``text_dim`` fewer
    parameters -- and the expert is the plain linear projection x~ = dropout(x) W_1 (same W_1, same
    dropout, still no additive bias after the projection).
    """

    def __init__(self, text_dim: int, hidden_size: int, dropout: float = 0.2, initializer_range: float = 0.02,
                 whitening: bool = True):
        super().__init__()
        self.dropout = Dropout(dropout)
        self.bias = nn.Parameter(torch.zeros(text_dim)) if whitening else None
        self.linear = nn.Linear(text_dim, hidden_size, bias=False)
        nn.init.normal_(self.linear.weight, mean=0.0, std=initializer_range)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. (2) computed as dropout(x) W_1 - b W_1: the same function as (dropout(x) - b) W_1, but
        with frozen text features (no gradient into x) autograd then needs no (N, text_dim) gradient of
        ``x - b`` just to sum it into the gradient of b -- a third of the adaptor's forward + backward,
        which dominates a step when the whole item table is adapted (tested: same values and gradients)."""
        out = self.linear(self.dropout(x))
        return out if self.bias is None else out - self.linear(self.bias)


class MoEAdaptor(nn.Module):
    """Eq. (3)-(5): v = sum_k g_k * x~^(k), g = softmax(x W_2 + delta), delta = N(0,1) * softplus(x W_3).

    The noise term delta (plus 1e-2, as in the authors' release) is added in training mode only
    and only when ``noisy_gating``; evaluation uses the clean gate.

    ``n_experts=1`` is the ablation "w/o MoE" (docs/analyses.md): the softmax over one logit is
    exactly 1 for any input and any noise draw, so v = x~^(1), one parametric whitening projection;
    its derivative is 0, so ``w_gate`` / ``w_noise`` (text_dim x 1, kept for a uniform state dict)
    receive an exactly zero gradient and never move from their zero initialisation (tested).
    ``whitening=False`` gives every expert a plain linear projection (see ParametricWhitening).
    """

    def __init__(
        self,
        text_dim: int,
        hidden_size: int,
        n_experts: int = 8,
        dropout: float = 0.2,
        noisy_gating: bool = True,
        initializer_range: float = 0.02,
        whitening: bool = True,
    ):
        super().__init__()
        self.n_experts = n_experts
        self.noisy_gating = noisy_gating
        self.experts = nn.ModuleList(
            ParametricWhitening(text_dim, hidden_size, dropout, initializer_range, whitening) for _ in range(n_experts)
        )
        self.w_gate = nn.Parameter(torch.zeros(text_dim, n_experts))
        self.w_noise = nn.Parameter(torch.zeros(text_dim, n_experts))

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. (4)-(5): expert weights g (..., G), summing to one."""
        logits = x @ self.w_gate
        if self.noisy_gating and self.training:
            noise_std = F.softplus(x @ self.w_noise) + 1e-2
            logits = logits + torch.randn_like(logits) * noise_std
        return torch.softmax(logits, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., text_dim) -> (..., hidden_size), Eq. (3)."""
        gates = self.gate(x)  # (..., G)
        expert_out = torch.stack([expert(x) for expert in self.experts], dim=-2)  # (..., G, d)
        return (gates.unsqueeze(-1) * expert_out).sum(dim=-2)
