"""Weights + config on disk, no pickle: ``config.json`` and ``model.safetensors``.

Shared by every model's ``save_pretrained`` / ``from_pretrained`` (Hugging Face layout).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def save_checkpoint(module: torch.nn.Module, path: str | os.PathLike, model_type: str, config: Any,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write ``{"model_type", "model": asdict(config), **extra}`` and the module's state dict."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(path / WEIGHTS_NAME), metadata={"format": "pt", "model": model_type})
    cfg = {"model_type": model_type, "model": asdict(config)}
    cfg.update(extra or {})
    (path / CONFIG_NAME).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return path


def load_checkpoint(path: str | os.PathLike, model_type: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(model config dict, state dict) of a directory written by :func:`save_checkpoint`."""
    from safetensors.torch import load_file

    path = Path(path)
    cfg = json.loads((path / CONFIG_NAME).read_text())
    if cfg.get("model_type", model_type) != model_type:
        raise ValueError(f"{path / CONFIG_NAME} holds a {cfg.get('model_type')!r} model, not {model_type}")
    return cfg["model"], load_file(str(path / WEIGHTS_NAME))
