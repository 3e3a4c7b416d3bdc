"""Dropout (Srivastava et al., 2014) with masks that are cheap to draw on a CPU.

Every model here uses dropout where the paper's setting does (the adaptor's 0.2 on text vectors, Eq. 2;
the encoder's 0.5 on hidden states, Eq. 6-7). torch's own dropout draws its CPU mask with
``bernoulli_``, about 14 ns per element on one core -- and UniSRec's adaptor drops out the whole item
table once per expert per step (8 x 3,470 x 384 values on Online Retail), so mask drawing was ~23% of a
fine-tuning step on the CPU; steps are 1.19-1.27x faster with these masks
(results/speed/dropout_masks_online_retail.md), and the same cells converge to the same metrics
(results/speed/dropout_masks_scientific.md). Here a CPU mask comes from the 16-bit lanes of 64-bit
random words: element i is dropped when its lane falls among the lowest
``k = round(p * 65536)`` of the 65,536 values, and kept elements are scaled by ``65536 / (65536 - k)``.

How this differs from ``torch.nn.Dropout``: the drop probability is ``k / 65536`` (within 7.7e-6 of p;
exactly p for p = 0.5), and the scale matches it, so E[dropout(x)] = x exactly, as in torch; the
draws come from torch's default generator (seeded and checkpointed like any other draw), but not
the same draws as ``bernoulli_``, so a run is reproducible against itself, not bit-equal to one made
with torch's dropout. On other devices (a GPU's fused kernel is already fast) it is torch's dropout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LANES = 65536  # values of one 16-bit lane


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``x`` with each element zeroed with probability ~p (see the module docstring) and the rest scaled."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or not x.is_floating_point() or not 0.0 < p < 1.0:
        return F.dropout(x, p, training=True)
    dropped = round(p * LANES)
    words = torch.randint(-(2**63), 2**63 - 1, ((x.numel() + 3) // 4,), dtype=torch.int64)
    lanes = words.view(torch.int16)[: x.numel()].view(x.shape)
    keep = lanes >= dropped - LANES // 2  # int16 lanes run from -32768: the lowest `dropped` values drop
    return x * keep * (LANES / (LANES - dropped))


class Dropout(nn.Module):
    """``nn.Dropout``'s drop-in (same ``p``, same train/eval behaviour), with :func:`dropout`'s CPU masks."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
