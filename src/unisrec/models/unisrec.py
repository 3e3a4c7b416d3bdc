"""UniSRec: MoE-adapted text items -> causal Transformer -> cosine scores, Eq. (6)-(12).

Read top to bottom: the config, the model (item table, sequence representation, scores), then
save/load (shared with every model: ``models/base.py``). The pre-training losses (Eq. 8-10) live in
``unisrec.training.losses``; this file is the network and its scoring rule.

Text features are not parameters: they are a frozen (num_items + 1, text_dim) table handed to the
model with :meth:`UniSRec.set_item_features` (row 0 = padding) and are not written to
``model.safetensors``. A model directory keeps them beside the weights (see training/serving).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unisrec.models.adaptor import MoEAdaptor
from unisrec.models.base import SequentialRecommender
from unisrec.models.encoder import EncoderConfig, SequenceEncoder, check_sizes, init_weights

Mode = Literal["inductive", "transductive"]
MODES: tuple[str, ...] = get_args(Mode)


@dataclass
class UniSRecConfig:
    """Paper / reference-release defaults (docs/protocol.md "Model"); ``whitening=False`` and
    ``n_experts=1`` are the ablation switches of docs/analyses.md."""

    mode: Mode = field(default="inductive", metadata={"help": "inductive = UniSRec_t (text only, Eq. 11); transductive = UniSRec_t+ID (Eq. 12)"})
    n_experts: int = field(default=8, metadata={
        "help": "MoE adaptor experts G (Eq. 3); 1 = ablation w/o MoE: one whitening projection, gate exactly 1"})
    adaptor_dropout: float = field(default=0.2, metadata={"help": "dropout on text vectors in the whitening (Eq. 2)"})
    noisy_gating: bool = field(default=True, metadata={"help": "gate noise in training (Eq. 4)"})
    whitening: bool = field(default=True, metadata={
        "help": "parametric whitening (Eq. 2): subtract a learned bias before each expert's projection; false = "
        "ablation: plain linear projection x W_1, no bias (text_dim fewer parameters per expert)"})
    temperature: float = field(default=0.07, metadata={"help": "softmax temperature of the cosine scores"})
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    # from the data, not options: the text vector size and the ID table size (transductive)
    text_dim: int = field(default=768, metadata={"derived": True})
    num_items: int = field(default=0, metadata={"derived": True})

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be inductive or transductive, got {self.mode!r}")
        check_sizes(self, n_experts=(1, 1024), text_dim=(1, 65536), num_items=(0, 2**31 - 2))
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


class UniSRec(SequentialRecommender):
    model_type = "unisrec"
    config_class = UniSRecConfig
    uses_text = True

    def __init__(self, config: UniSRecConfig):
        super().__init__()
        self.config = config
        enc = config.encoder
        self.adaptor = MoEAdaptor(
            config.text_dim, enc.hidden_size, config.n_experts, config.adaptor_dropout, config.noisy_gating, enc.initializer_range,
            config.whitening,
        )
        self.encoder = SequenceEncoder(enc)
        self.item_id_embedding: nn.Embedding | None = None
        if config.mode == "transductive":
            self.item_id_embedding = nn.Embedding(config.num_items + 1, enc.hidden_size, padding_idx=0)
            init_weights(self.item_id_embedding, enc.initializer_range)
            with torch.no_grad():
                self.item_id_embedding.weight[0].zero_()
        self.register_buffer("item_features", torch.zeros(1, config.text_dim), persistent=False)


    # ------------------------------------------------------------------ items
    def feature_rows(self) -> int | None:
        """Transductive: one text vector per row of the ID table; inductive: any catalogue."""
        return None if self.item_id_embedding is None else self.item_id_embedding.num_embeddings

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

    def item_table_from_features(self, features: Any, item_ids: torch.Tensor | None = None, chunk: int = 65536) -> torch.Tensor:
        """:meth:`item_representations` for an arbitrary (N, text_dim) feature array, in chunks, no grad.

        Serving uses it for a whole (possibly memory-mapped, million-row) catalogue and for new
        items' texts: ``chunk`` rows at a time, so the adaptor's (N, experts, d) intermediate is never
        materialised. ``item_ids`` gives each row's index into the transductive ID table (row ``r`` ->
        ``r`` when None); -1 marks a row without an ID embedding (a new item: ``e_i = 0``).
        """
        device = self.item_features.device
        n = features.shape[0]
        out = torch.empty(n, self.config.encoder.hidden_size, dtype=torch.float32, device=device)
        id_table = self.item_id_embedding.weight if self.item_id_embedding is not None else None
        starts = range(0, n, chunk)
        if len(starts) > 4:  # a large catalogue: minutes on a small CPU
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"adapt {n:,} items", unit="chunk")
        with torch.inference_mode():
            for a in starts:
                b = min(n, a + chunk)
                v = self.adaptor(torch.from_numpy(np.array(features[a:b], dtype=np.float32)).to(device))  # a copy: mmaps are read-only
                if id_table is not None:
                    rows = torch.arange(a, b, device=device) if item_ids is None else item_ids[a:b].to(device)
                    has_id = (rows >= 0) & (rows < id_table.shape[0])
                    v[has_id] += id_table[rows[has_id]]
                out[a:b] = v
        return out

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

    # ------------------------------------------------------------- transfer
    def freeze_for_transfer(self) -> None:
        """docs/protocol.md "Fine-tuning": freeze the Transformer layers and position embeddings; the MoE
        adaptor, the input LayerNorm and (transductive) the ID table stay trainable."""
        for p in self.encoder.layers.parameters():
            p.requires_grad_(False)
        self.encoder.position_embedding.weight.requires_grad_(False)

    # ----------------------------------------------------------- save / load
    def weights_from_checkpoint(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A pre-trained checkpoint carries no (or another domain's) ID table: keep the fresh one."""
        own = self.state_dict()
        state = {k: v for k, v in state.items() if not (k.startswith("item_id_embedding") and (k not in own or own[k].shape != v.shape))}
        own_ids = {k: v for k, v in own.items() if k.startswith("item_id_embedding")}
        return {**own_ids, **state}

