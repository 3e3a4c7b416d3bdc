"""ZESRec (Ding et al., "Zero-Shot Recommender Systems", 2021) as the UniSRec authors ran it.

No official code exists. The UniSRec authors describe their version (docs/training.md "Baselines:
S3-Rec and ZESRec" gathers what they said): the items are the
frozen pre-computed text vectors, mapped by a two-layer MLP with **no non-linearity**, ZESRec's
GRU is replaced by the SASRec-style causal Transformer, and the model is trained with
cross-entropy over all items' projected vectors. So:

    v_i = W_2 (W_1 x_i + b_1) + b_2                 item vector from the text vector x_i
    s   = Transformer(v_{i_1} + p_1, ..., v_{i_n} + p_n)   output at the last item (Eq. 6-7 of UniSRec)
    P(i | s) = softmax_i(s . v_i)                   over every item of the domain (padding excluded)

There is no ID embedding and no other per-item parameter, so a trained model scores *any*
catalogue from its text vectors (``inductive_over_items``): trained on a source domain it is
applied zero-shot to a target (``unisrec evaluate MODEL_DIR --dataset TARGET``) or fine-tuned on it
(``unisrec train zesrec TARGET --init-from MODEL_DIR``). The text vectors must come from the same
encoder on both sides.

Differences from ZESRec's paper: its item and user "universal embedding networks" (an MLP over
BERT vectors and a GRU) become the linear projection and the shared Transformer, as the UniSRec
authors ran it; its Bayesian-style regularisation of ID offsets is absent (there are no IDs).
"""

from __future__ import annotations

from dataclasses import dataclass, field


import torch
from torch import nn

from unisrec.models.base import SequentialRecommender
from unisrec.models.encoder import EncoderConfig, SequenceEncoder, check_sizes, init_weights


@dataclass
class ZESRecConfig:
    """Shared Transformer settings; the projection's size comes from the text vectors."""

    projection_layers: int = field(default=2, metadata={"help": "linear layers of the text projection (no non-linearity between them)"})
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    text_dim: int = field(default=768, metadata={"derived": True})

    def __post_init__(self) -> None:
        check_sizes(self, projection_layers=(1, 8), text_dim=(1, 65536))


def linear_projection(features: torch.Tensor, layers: nn.ModuleList) -> torch.Tensor:
    """v = W_k(...(W_1 x + b_1)...) + b_k: the UniSRec authors' ZESRec item network, an MLP with no
    non-linearity (so a linear map of the frozen text vector)."""
    for layer in layers:
        features = layer(features)
    return features


class ZESRec(SequentialRecommender):
    model_type = "zesrec"
    config_class = ZESRecConfig
    uses_text = True
    inductive_over_items = True  # no per-item parameter: scores any catalogue by its text vectors

    def __init__(self, config: ZESRecConfig):
        super().__init__()
        self.config = config
        hidden = config.encoder.hidden_size
        dims = [config.text_dim] + [hidden] * config.projection_layers
        self.projection = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.projection.apply(lambda m: init_weights(m, config.encoder.initializer_range))
        self.encoder = SequenceEncoder(config.encoder)
        self.register_buffer("item_features", torch.zeros(1, config.text_dim), persistent=False)



    @property
    def num_items(self) -> int:
        return self.item_features.shape[0] - 1

    def item_representations(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """Projected text vectors (num_items + 1, d), or the rows of ``items``."""
        x = self.item_features if items is None else self.item_features[items]
        return linear_projection(x, self.projection)

    def sequence_representation(self, item_seq: torch.Tensor, lengths: torch.Tensor,
                                item_table: torch.Tensor | None = None) -> torch.Tensor:
        """(B, d): causal encoder output at each history's last real item."""
        item_repr = self.item_representations(item_seq) if item_table is None else item_table[item_seq]
        return self.encoder(item_repr, lengths)

    def scores(self, seq_repr: torch.Tensor, item_table: torch.Tensor) -> torch.Tensor:
        """<s, v_i> against every item's projected text vector; column 0 (padding) is -inf."""
        logits = seq_repr @ item_table.T
        logits[:, 0] = float("-inf")
        return logits
