"""`unisrec finetune`: UniSRec on a target domain, from scratch or transferred from a pre-trained
checkpoint (docs/protocol.md "Fine-tuning", Eq. 11-12).

API::

    finetune(dataset_dir, output, TrainConfig(), UniSRecConfig(mode="inductive"), pretrained=None) -> metrics

With a pre-trained checkpoint (a ``UniSRec.save_pretrained`` directory, e.g. `unisrec pretrain`'s
output) the Transformer and position embeddings are frozen (``unfreeze_all`` trains everything);
the MoE adaptor, the input LayerNorm and (transductive) a fresh ID table train. The checkpoint
brings its own architecture: of ``model_config`` only ``mode`` is used then. Training itself is
the shared supervised loop (``training.supervised.fit``).
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from unisrec.errors import UserError
from unisrec.models.unisrec import UniSRec, UniSRecConfig
from unisrec.training.config import TrainConfig
from unisrec.training.state import holds_output_lock, seed_everything
from unisrec.training.supervised import check_history, fit, load_dataset_features, resumed_configs


def load_for_transfer(pretrained: str | os.PathLike, mode: str, num_items: int, text_dim: int, unfreeze_all: bool) -> UniSRec:
    """A pre-trained UniSRec with the target's ID table size (transductive) and the transfer freezing."""
    from unisrec.models.model_dir import read_model_config

    pre_cfg = read_model_config(pretrained)
    if pre_cfg.get("model_type") != "unisrec":
        raise UserError(f"{pretrained}/config.json: --from needs a UniSRec checkpoint, found {pre_cfg.get('model_type')!r}")
    pre_dim = int(pre_cfg["model"]["text_dim"])
    if pre_dim != text_dim:
        raise UserError(
            f"{pretrained} was pre-trained on {pre_dim}-d text features but the dataset's feature set is {text_dim}-d; "
            "encode the dataset with the checkpoint's encoder"
        )
    model = UniSRec.from_pretrained(pretrained, mode=mode, num_items=num_items)
    if not unfreeze_all:
        model.freeze_for_transfer()
    return model


@holds_output_lock
def finetune(
    dataset_dir: str | os.PathLike,
    output: str | os.PathLike,
    train: TrainConfig | None = None,
    model_config: UniSRecConfig | None = None,
    pretrained: str | os.PathLike | None = None,
    resume: bool = False,
    unfreeze_all: bool = False,
) -> dict[str, Any]:
    """Fine-tune UniSRec (``model_config.mode``) on a dataset dir; from scratch unless ``pretrained``."""
    from unisrec.data.dataset import Dataset

    output = Path(output)
    train, model_config = resumed_configs(output, train or TrainConfig(), model_config or UniSRecConfig(), resume)
    ds = Dataset.load(dataset_dir)
    feat_name, info, feats = load_dataset_features(ds, train)
    seed_everything(train.seed)
    if pretrained is not None:
        model = load_for_transfer(pretrained, model_config.mode, ds.num_items, int(feats.shape[1]), unfreeze_all)
        model.set_item_features(torch.from_numpy(feats))
    else:
        try:
            model = UniSRec.for_dataset(model_config, ds.num_items, torch.from_numpy(feats))
        except ValueError as exc:
            raise UserError(f"model unisrec: {exc}") from None
    check_history(model, train)
    extra = {
        "pretrained": str(Path(pretrained).resolve()) if pretrained else None,
        "unfreeze_all": unfreeze_all,
        "run_config": {"train": asdict(train), "model": asdict(model.config)},
    }
    return fit(model, ds, train, output, feature_name=feat_name, extra=extra, resume=resume)
