"""What every trainable model of unisrec is: a :class:`SequentialRecommender`.

The training loop, the full-ranking evaluation, the model directory and serving only use this
interface, so a new model is one file in ``models/`` (a config dataclass nesting
:class:`~unisrec.models.encoder.EncoderConfig` and a subclass of this) plus one line in
``models/registry.py`` (see docs/adding_a_model.md):

* ``item_representations(items=None)`` -> the (num_items + 1, d) item table (row 0 = padding), or
  the rows of ``items``;
* ``sequence_representation(seq, lengths, table)`` -> (B, d) for left-aligned histories;
* ``scores(seq_repr, table)`` -> (B, num_items + 1) logits with column 0 at ``-inf``;
* ``position_representations(seq, lengths, table)`` -> (B, L, d), the sequence representation
  after every prefix at once (every-position training); by default the causal ``encoder``'s
  outputs over ``table[seq]``;
* ``for_dataset(config, num_items, features)`` builds a fresh model for a domain.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from unisrec.errors import UserError
from unisrec.models.checkpoint import config_from_dict, load_checkpoint, save_checkpoint


class SequentialRecommender(nn.Module):
    model_type: ClassVar[str]  # the registry name, written to config.json
    config_class: ClassVar[type]
    uses_text: ClassVar[bool] = False  # True: needs a feature set (frozen text vectors) of the dataset

    config: Any

    def forward(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, L) left-aligned histories -> (B, num_items + 1) logits over the whole catalogue."""
        table = self.item_representations()
        return self.scores(self.sequence_representation(item_seq, lengths, table), table)

    def position_representations(self, item_seq: torch.Tensor, lengths: torch.Tensor, item_table: torch.Tensor) -> torch.Tensor:
        """(B, L, d): row j is :meth:`sequence_representation` of the prefix ending at position j
        (causal attention: it sees items 0..j only), for every j at once -- what every-position
        batching scores. Models whose sequence representation is their causal ``encoder`` over
        ``item_table[seq]`` (SASRec, UniSRec, S3-Rec, ZESRec) inherit this; others override it."""
        return self.encoder.forward_all(item_table[item_seq], lengths)

    @property
    def max_seq_length(self) -> int:
        return int(self.config.encoder.max_seq_length)

    @classmethod
    def for_dataset(cls, config: Any, num_items: int, features: Any = None) -> "SequentialRecommender":
        """A fresh model for a domain of ``num_items`` items: the config's ``num_items`` (if it has one)
        set, and for a text model its ``text_dim`` from ``features``, which it then holds."""
        changes = {"num_items": num_items} if "num_items" in {f.name for f in dataclasses.fields(config)} else {}
        if not cls.uses_text:
            return cls(dataclasses.replace(config, **changes))
        if features is None:
            raise UserError(f"{cls.__name__} needs the dataset's text features; run `unisrec encode` first")
        feats = torch.as_tensor(features, dtype=torch.float32)
        model = cls(dataclasses.replace(config, **changes, text_dim=int(feats.shape[1])))
        model.set_item_features(feats)
        return model

    def feature_rows(self) -> int | None:
        """How many feature rows (items + padding) a text model needs; None = any catalogue."""
        return None

    def checked_features(self, features: Any) -> torch.Tensor:
        """``features`` as float32, or a ValueError when the shape does not fit this model."""
        feats = torch.as_tensor(features, dtype=torch.float32)
        if feats.ndim != 2 or feats.shape[1] != self.config.text_dim:
            raise ValueError(f"features of shape {tuple(feats.shape)} do not match text_dim {self.config.text_dim}")
        rows = self.feature_rows()
        if rows is not None and feats.shape[0] != rows:
            raise ValueError(f"{feats.shape[0] - 1} items of features do not match the model's {rows - 1} items")
        return feats

    def set_item_features(self, features: Any) -> None:
        """Text models take their frozen (num_items + 1, text_dim) feature table here (row 0 = padding)."""
        if not self.uses_text:
            raise NotImplementedError(f"{type(self).__name__} does not read text features")
        self.item_features = self.checked_features(features).to(self.item_features.device)

    # ----------------------------------------------------------- save / load
    def save_pretrained(self, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
        """``config.json`` ({"model_type", "model": config} + ``extra``) and ``model.safetensors``."""
        return save_checkpoint(self, path, self.model_type, self.config, extra)

    @classmethod
    def upgrade_config(cls, recorded: dict[str, Any]) -> dict[str, Any]:
        """The model config a directory's ``config.json`` records -> the one it ran with today. A field
        added later is absent from older directories; where that field's default changed behaviour, a
        model names the value the older code had here (the loader and the benchmark's staleness check
        both read through this). Default: as recorded."""
        return recorded

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **overrides: Any) -> "SequentialRecommender":
        """Load a directory written by :meth:`save_pretrained`; ``overrides`` change config fields
        (e.g. UniSRec's ``mode="transductive", num_items=N`` to add a fresh ID table when transferring)."""
        model_cfg, state = load_checkpoint(path, cls.model_type)
        model_cfg = cls.upgrade_config(model_cfg)
        try:
            model = cls(config_from_dict(cls.config_class, {**model_cfg, **overrides}))
        except (TypeError, ValueError) as exc:
            raise UserError(f"{path}/config.json: invalid model config ({exc})") from None
        model.load_weights(model.weights_from_checkpoint(state), path)
        return model

    def weights_from_checkpoint(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The saved tensors this freshly built model takes; a model that may keep some of its own
        (UniSRec's ID table when transferring) overrides it."""
        return state

    def load_weights(self, state: dict[str, torch.Tensor], source: str | os.PathLike) -> None:
        """Load a saved state dict; a missing or mis-shaped tensor is a clear error naming ``source``."""
        own = self.state_dict()
        bad = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
        missing = [k for k in own if k not in state]
        if bad or missing:
            raise UserError(f"{source}: weights do not match the config (missing: {missing or '-'}, wrong shape: {bad or '-'})")
        self.load_state_dict(state, strict=False)
