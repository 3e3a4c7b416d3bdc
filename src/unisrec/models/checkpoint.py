"""Weights + config on disk, no pickle: ``config.json`` and ``model.safetensors`` (Hugging Face layout).

Shared by every model's ``save_pretrained`` / ``from_pretrained``. Model configs are dataclasses
that may nest others (every sequence model nests one ``EncoderConfig``); :func:`config_from_dict`
rebuilds them from JSON, and also reads the flat layout that unisrec 0.1 wrote (encoder fields at
the top level) so older model directories keep loading.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from pathlib import Path
from typing import Any, TypeVar

import torch

from unisrec.errors import UserError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
T = TypeVar("T")


def config_from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build dataclass ``cls`` from ``data``; a nested dataclass field takes its own sub-dict, or
    else its fields from the top level (the old flat layout). Unknown keys are ignored."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            sub = data.get(f.name)
            values[f.name] = config_from_dict(tp, sub if isinstance(sub, dict) else data)
        elif f.name in data:
            values[f.name] = data[f.name]
    return cls(**values)


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux: /proc/self/status)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: the classic set-and-restore
    os.umask(mask)
    return mask


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """``safetensors.torch.save_file``, then the mode any newly written file gets (0666 minus the umask):
    save_file writes a private temporary file and renames it, so its files were 0600 whatever the umask."""
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=metadata)
    os.chmod(path, 0o666 & ~current_umask())


def save_checkpoint(module: torch.nn.Module, path: str | os.PathLike, model_type: str, config: Any,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write ``{"model_type", "model": asdict(config), **extra}`` and the module's state dict.

    Each file goes to a temporary name first and is renamed into place, so a crash never leaves a
    torn file behind."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    tmp = path / f".{WEIGHTS_NAME}.tmp-{os.getpid()}"
    save_safetensors(state, tmp, metadata={"format": "pt", "model": model_type})
    os.replace(tmp, path / WEIGHTS_NAME)
    cfg = {"model_type": model_type, "model": dataclasses.asdict(config)}
    cfg.update(extra or {})
    tmp = path / f".{CONFIG_NAME}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path / CONFIG_NAME)
    return path


def read_config_json(path: str | os.PathLike) -> dict[str, Any]:
    """``path/config.json`` as a dict, or a one-line UserError naming the file and the problem."""
    file = Path(path) / CONFIG_NAME
    if not file.is_file():
        raise UserError(f"{path} is not a model directory (no {CONFIG_NAME}); train one with `unisrec finetune` or `unisrec train`")
    try:
        cfg = json.loads(file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{file} is not valid JSON ({exc}); the model directory is damaged") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
        raise UserError(f"{file} has no \"model\" section; the model directory is damaged")
    return cfg


def load_checkpoint(path: str | os.PathLike, model_type: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(model config dict, state dict) of a directory written by :func:`save_checkpoint`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    cfg = read_config_json(path)
    if cfg.get("model_type", model_type) != model_type:
        raise UserError(f"{path / CONFIG_NAME} holds a {cfg.get('model_type')!r} model, not {model_type}")
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise UserError(f"{weights} is missing; the model directory is incomplete")
    try:
        return cfg["model"], load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{weights} cannot be read ({exc}); the model directory is damaged") from None
