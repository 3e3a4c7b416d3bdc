"""Every trainable model by name: ``unisrec train NAME`` and every model directory's ``model_type``.

Adding a model is one file in ``models/`` (see docs/adding_a_model.md) plus one line in
:data:`BUILT_IN` naming its module and class. The registry imports a model's module only when
that model is asked for, so commands that never touch a model never import torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from unisrec.errors import UserError

# name -> (module:class, one line for `unisrec train --help`, batchings it supports[, default batching])
# The optional 4th element is the batching `train` uses when --batching is left at its default
# (last-item) and the model does not support that one (BERT4Rec trains only with its Cloze task).
BUILT_IN: dict[str, tuple[Any, ...]] = {
    "unisrec": ("unisrec.models.unisrec:UniSRec", "UniSRec from scratch (use `unisrec finetune --from` to transfer)", ("last-item", "every-position")),
    "sasrec": ("unisrec.models.sasrec:SASRec", "SASRec: ID embeddings + the same Transformer, CE over all items", ("last-item", "every-position")),
    "bert4rec": ("unisrec.models.bert4rec:BERT4Rec", "BERT4Rec: bidirectional Transformer over item IDs, Cloze (masked-item) training", ("cloze-prefix", "cloze"), "cloze-prefix"),
    "fdsa": ("unisrec.models.fdsa:FDSA", "FDSA: item-ID and text-feature self-attention streams fused, CE over all items", ("last-item", "every-position")),
    "s3rec": ("unisrec.models.s3rec:S3Rec", "S3-Rec: self-supervised pre-training (AAP, MIP, MAP, SP over text vectors), then SASRec fine-tuning", ("last-item", "every-position")),
    "zesrec": ("unisrec.models.zesrec:ZESRec", "ZESRec: text vectors -> linear projection -> the same Transformer; no IDs, zero-shot to any catalogue", ("last-item", "every-position")),
    "recguru": ("unisrec.models.recguru:RecGURU", "RecGURU: shared self-attentive autoencoder + adversarial domain discriminator, trained with --source domains and the target", ("last-item", "every-position")),
    "ccdr": ("unisrec.models.ccdr:CCDR", "CCDR: intra- and inter-domain contrastive learning with --source domains, the target's ID model scores", ("last-item", "every-position")),
}


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its class (a ``models.base.SequentialRecommender``) and what it supports."""

    name: str
    model_class: Any
    help: str = ""
    batchings: tuple[str, ...] = ("last-item", "every-position")
    default_batching: str | None = None  # used when --batching is left at last-item and that is unsupported

    @property
    def config_class(self) -> type:
        return self.model_class.config_class


_added: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add a model at run time (a plug-in, or a test's toy model); its class's ``model_type`` must be the name."""
    if spec.model_class.model_type != spec.name:
        raise ValueError(f"{spec.model_class.__name__}.model_type is {spec.model_class.model_type!r}, registered as {spec.name!r}")
    _added[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    _added.pop(name, None)


def names() -> list[str]:
    return sorted({*BUILT_IN, *_added})


def describe() -> dict[str, str]:
    """name -> one-line help, without importing any model."""
    out = {name: entry[1] for name, entry in BUILT_IN.items()}
    out.update({name: spec.help for name, spec in _added.items()})
    return dict(sorted(out.items()))


def get(name: str) -> ModelSpec:
    """The spec of model ``name`` (imports its module), or a UserError listing the known names."""
    if name in _added:
        return _added[name]
    if name not in BUILT_IN:
        raise UserError(f"unknown model {name!r}; known: {', '.join(names())}")
    target, help_, batchings, *default = BUILT_IN[name]
    module, cls = target.split(":")
    return ModelSpec(name, getattr(importlib.import_module(module), cls), help_, batchings, *default)
