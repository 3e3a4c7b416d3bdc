"""The model directory: everything needed to score a domain's items, with no pickle.

Layout::

    MODEL_DIR/
      config.json            {"model_type": a registered name, "model": {...model config...},
                              "dataset": {"path", "name", "fingerprint", "features"},
                              "encoder": {...the feature set's manifest entry...},
                              "training": {...}, ...}
      model.safetensors      weights (text features excluded)
      catalogue/items.parquet  index (1..n), item_id, text -- the domain's items
      catalogue/features.npy   float32 (n + 1, text_dim), row 0 = padding (text models only)

A model directory is self-contained: evaluation reads the dataset path recorded in config.json
for its sequences, but serving needs nothing but this folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from unisrec.data.dataset import Dataset, write_items_table
from unisrec.errors import UserError

CATALOGUE = "catalogue"


def dataset_fingerprint(ds: Dataset) -> str:
    """A short hash of the item ids and sequences: tells whether a model matches a dataset."""
    h = hashlib.sha256()
    h.update("\n".join(ds.item_ids).encode())
    h.update(np.ascontiguousarray(ds.seq_offsets, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(ds.seq_items, dtype=np.int32).tobytes())
    return h.hexdigest()[:16]


def save_model_dir(
    model: Any,
    path: str | os.PathLike,
    dataset: Dataset,
    feature_name: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (anything with ``save_pretrained(path, extra)``) plus the dataset's catalogue.

    ``feature_name`` (UniSRec) also copies that feature set as ``catalogue/features.npy``.
    """
    path = Path(path)
    info: dict[str, Any] = {}
    if feature_name is not None:
        feature_name, info = dataset.feature_info(feature_name)
    meta = {
        "dataset": {
            "path": str(Path(dataset.path).resolve()) if dataset.path else None,
            "name": dataset.name,
            "fingerprint": dataset_fingerprint(dataset),
            "features": feature_name,
        },
        "encoder": info,
    }
    meta.update(extra or {})
    model.save_pretrained(path, meta)
    cat = path / CATALOGUE
    cat.mkdir(exist_ok=True)
    write_items_table(cat / "items.parquet", dataset.item_ids, dataset.item_texts)
    if feature_name is not None:
        shutil.copyfile(dataset.path / info["file"], cat / "features.npy")
    return path


def read_model_config(path: str | os.PathLike) -> dict[str, Any]:
    """``config.json`` of a model directory, or a one-line UserError."""
    from unisrec.models.checkpoint import read_config_json

    return read_config_json(path)


def load_catalogue(path: str | os.PathLike, mmap: bool = True) -> tuple[list[str], list[str], np.ndarray | None]:
    """(raw item ids, texts, features or None) of a model directory; ids/texts are 1-based by position + 1."""
    import pyarrow.parquet as pq

    cat = Path(path) / CATALOGUE
    if not (cat / "items.parquet").is_file():
        raise UserError(f"{path} has no {CATALOGUE}/items.parquet; it was not written by save_model_dir")
    try:
        table = pq.read_table(cat / "items.parquet", columns=["item_id", "text"])
    except (OSError, ValueError, KeyError) as exc:  # pyarrow's errors derive from these
        raise UserError(f"{cat / 'items.parquet'} cannot be read ({str(exc).splitlines()[0]}); the model directory is damaged") from None
    feats = None
    if (cat / "features.npy").is_file():
        try:
            feats = np.load(cat / "features.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise UserError(f"{cat / 'features.npy'} cannot be read ({exc}); the model directory is damaged") from None
        if feats.ndim != 2 or feats.shape[0] != table.num_rows + 1:
            raise UserError(f"{cat / 'features.npy'} has shape {feats.shape}, expected ({table.num_rows + 1}, dim); the model directory is damaged")
    return table.column("item_id").to_pylist(), table.column("text").to_pylist(), feats


def load_model(path: str | os.PathLike) -> Any:
    """Load the model of a model directory by its registered ``model_type``, with its catalogue
    features set when the model reads text."""
    from unisrec.models import registry

    cfg = read_model_config(path)
    kind = cfg.get("model_type")
    if not isinstance(kind, str) or kind not in registry.names():
        raise UserError(f"{path}/config.json: unknown model_type {kind!r}; known: {', '.join(registry.names())}")
    model = registry.get(kind).model_class.from_pretrained(path)
    check_finite_weights(path, model)
    if model.uses_text:
        ids, _, feats = load_catalogue(path, mmap=False)
        if feats is None:
            raise UserError(f"{path}/{CATALOGUE}/features.npy is missing; the model directory is incomplete")
        bad = np.flatnonzero(~np.isfinite(feats[1:]).all(axis=1))
        if len(bad):  # such an item scores NaN: ranked wrongly and silently (recommend and serve refuse it too)
            shown = ", ".join(repr(ids[i]) for i in bad[:5]) + (f" (and {len(bad) - 5} more)" if len(bad) > 5 else "")
            raise UserError(f"{path}/{CATALOGUE}/features.npy: {len(bad)} items have NaN or infinite text features: {shown}; "
                            "the model directory is damaged (re-encode their texts)")
        try:
            model.set_item_features(feats)
        except ValueError as exc:
            raise UserError(f"{path}/{CATALOGUE}/features.npy: {exc}") from None
    return model


def check_finite_weights(path: str | os.PathLike, model: Any) -> None:
    """A one-line UserError naming the first weight of ``model`` (loaded from ``path``) that holds NaN
    or infinite values: its scores would be NaN and rank silently wrong."""
    for name, value in model.state_dict().items():
        if value.is_floating_point() and not bool(value.isfinite().all()):
            raise UserError(f"{path}/model.safetensors: weight {name!r} holds NaN or infinite values; "
                            "the model directory is damaged")
