"""FDSA (Zhang et al., IJCAI 2019) as the UniSRec paper ran it: Table 3's FDSA column.

Two self-attention streams over a history, read at its last real position:

* the **item stream** -- learned item-ID embeddings + positions -> causal Transformer;
* the **feature stream** -- each item's features -> the same kind of causal Transformer (its own
  layers). The UniSRec release feeds it the item's frozen text vector through an MLP adapter
  (``Linear(text_dim, hidden)`` + ReLU, RecBole's ``MLPLayers``) instead of FDSA's category/brand
  embeddings. The paper's FDSA pools an item's several feature vectors (the release's
  ``pooling_mode: mean``); with one text vector per item that mean is the vector itself, so no
  pooling layer is needed (FDSA's vanilla attention over one feature is the identity too).

The two outputs are concatenated and fused by a linear layer (FDSA's fully-connected layer,
O_sf = [O_s; O_f] W_sf + b_sf), then LayerNorm and dropout as in the release; scores are dot
products with the item-ID table, trained with cross-entropy over all items (``loss_type: CE``).

As in the release (``baselines/fdsa.py`` of the UniSRec repository), the two streams share one
position table, one input LayerNorm (also applied after the fusion) and one dropout: here these
are the item stream's :class:`~unisrec.models.encoder.SequenceEncoder` ``embed`` parts, reused by
the feature stream. Differences from the release: the padding column is excluded from the
training softmax as well as from ranking (as for SASRec here).

Batching: ``last-item`` (the paper's) or ``every-position``: both streams are causal and the fusion
is position-wise, so :meth:`FDSA.position_representations` -- both streams at every position,
fused -- gives each target exactly the representation its prefix gets (a test checks the losses).

Text features are a frozen (num_items + 1, text_dim) table given with :meth:`FDSA.set_item_features`
(row 0 = padding); they are not parameters and are not written to ``model.safetensors`` (the model
directory keeps them in its catalogue, as for UniSRec).

``random_features`` reproduces an accident of the release: it holds the text vectors in an
``nn.Embedding`` created before ``self.apply(_init_weights)``, which overwrites every
``nn.Embedding`` with N(0, 0.02) noise, so the release's FDSA (frozen table) read fixed random
codes, not text. With the option the feature table is such noise (drawn at construction from the
seeded torch RNG, saved with the weights) and the dataset's vectors are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unisrec.models.base import SequentialRecommender
from unisrec.models.encoder import (EncoderConfig, SequenceEncoder, TransformerLayer, causal_padding_mask, check_sizes, init_weights,
                                    layers_at_last_position)


@dataclass
class FDSAConfig:
    """The release's props/FDSA.yaml: hidden 300, 2 layers, 2 heads, inner 256, dropout 0.5/0.5,
    GELU, adapter text_dim -> 300."""

    random_features: bool = field(default=False, metadata={
        "help": "feature stream reads a fixed N(0, 0.02) table instead of the text vectors (what the release's initialisation does)"})
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    text_dim: int = field(default=768, metadata={"derived": True})
    num_items: int = field(default=0, metadata={"derived": True})

    def __post_init__(self) -> None:
        check_sizes(self, text_dim=(1, 65536), num_items=(0, 2**31 - 2))


class FDSA(SequentialRecommender):
    model_type = "fdsa"
    config_class = FDSAConfig
    uses_text = True

    def __init__(self, config: FDSAConfig):
        super().__init__()
        if config.num_items < 1:
            raise ValueError("FDSAConfig.num_items must be the number of items of the domain")
        self.config = config
        enc = config.encoder
        self.item_embedding = nn.Embedding(config.num_items + 1, enc.hidden_size, padding_idx=0)
        self.encoder = SequenceEncoder(enc)  # item stream; its positions / LayerNorm / dropout are shared
        self.feature_layers = nn.ModuleList(
            TransformerLayer(enc.hidden_size, enc.n_heads, enc.inner_size, enc.hidden_dropout, enc.attn_dropout, enc.layer_norm_eps)
            for _ in range(enc.n_layers)
        )
        self.adapter = nn.Linear(config.text_dim, enc.hidden_size)
        self.fusion = nn.Linear(2 * enc.hidden_size, enc.hidden_size)
        for module in (self.item_embedding, self.feature_layers, self.adapter, self.fusion):
            module.apply(lambda m: init_weights(m, enc.initializer_range))
        if config.random_features:  # the release's table after its init: noise, kept with the weights
            noise = torch.randn(config.num_items + 1, config.text_dim) * enc.initializer_range
            self.register_buffer("item_features", noise, persistent=True)
        else:
            self.register_buffer("item_features", torch.zeros(config.num_items + 1, config.text_dim), persistent=False)


    def feature_rows(self) -> int:
        return self.num_items + 1

    def set_item_features(self, features: Any) -> None:
        """The frozen (num_items + 1, text_dim) text vectors, row 0 = padding (checked, then ignored
        with ``random_features``)."""
        feats = self.checked_features(features)
        if not self.config.random_features:
            self.item_features = feats.to(self.item_features.device)

    @property
    def num_items(self) -> int:
        return self.config.num_items

    # ------------------------------------------------------------------ items
    def item_representations(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """The ID table (num_items + 1, d) -- what both the item stream and the scores read."""
        return self.item_embedding.weight if items is None else self.item_embedding(items)

    def item_feature_vectors(self, item_seq: torch.Tensor) -> torch.Tensor:
        """(B, L, d) feature-stream inputs: the release's MLP adapter ReLU(x_i W + b) on each item's
        frozen text vector (mean pooling over an item's one feature vector is that vector)."""
        return F.relu(self.adapter(self.item_features[item_seq]))

    # --------------------------------------------------------------- sequences
    def item_stream(self, item_repr: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """FDSA's item-based self-attention block: (B, d) at the last real position."""
        return self.encoder(item_repr, lengths)

    def feature_stream_all(self, feature_repr: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """FDSA's feature-based self-attention block: the shared positions + LayerNorm + dropout
        (as in the release), its own causal Transformer layers; (B, L, d), one output per position."""
        x = self.encoder.embed(feature_repr)
        mask = causal_padding_mask(lengths, x.shape[1])
        for layer in self.feature_layers:
            x = layer(x, mask)
        return x

    def feature_stream(self, feature_repr: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The feature stream at the last real position: (B, d). Like the item stream, its final layer
        is computed at that position only (:func:`layers_at_last_position`): the same function as
        reading :meth:`feature_stream_all` there, at ~2/3 of the cost."""
        return layers_at_last_position(self.feature_layers, self.encoder.embed(feature_repr), lengths.clamp(min=1))

    def fuse(self, item_out: torch.Tensor, feature_out: torch.Tensor) -> torch.Tensor:
        """FDSA's fully-connected layer O_sf = [O_s; O_f] W_sf + b_sf, then the release's shared
        LayerNorm and dropout."""
        return self.encoder.dropout(self.encoder.norm(self.fusion(torch.cat([item_out, feature_out], dim=-1))))

    def sequence_representation(
        self, item_seq: torch.Tensor, lengths: torch.Tensor, item_table: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, d): both streams at each history's last real item, concatenated and fused."""
        item_repr = self.item_embedding(item_seq) if item_table is None else item_table[item_seq]
        return self.fuse(self.item_stream(item_repr, lengths), self.feature_stream(self.item_feature_vectors(item_seq), lengths))

    def position_representations(self, item_seq: torch.Tensor, lengths: torch.Tensor, item_table: torch.Tensor) -> torch.Tensor:
        """(B, L, d): both streams at every position, fused position-wise (every-position batching)."""
        items = self.encoder.forward_all(item_table[item_seq], lengths)
        return self.fuse(items, self.feature_stream_all(self.item_feature_vectors(item_seq), lengths))

    # ------------------------------------------------------------------ scores
    def scores(self, seq_repr: torch.Tensor, item_table: torch.Tensor) -> torch.Tensor:
        """FDSA's prediction: <O_sf, e_i> against every item's ID embedding; column 0 (padding) -inf."""
        logits = seq_repr @ item_table.T
        logits[:, 0] = float("-inf")
        return logits
