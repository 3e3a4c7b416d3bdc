"""Small real model directories for the serving tests (random-weight UniSRec, real on-disk format)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from unisrec.data.dataset import Dataset
from unisrec.models.encoder import EncoderConfig
from unisrec.models.model_dir import save_model_dir
from unisrec.models.unisrec import UniSRec, UniSRecConfig


def text_encoder_class():
    """The project's TextEncoder, or None while it is not importable."""
    try:
        from unisrec.text import TextEncoder
    except ImportError:
        return None
    return TextEncoder


def tiny_config(text_dim: int, mode: str = "inductive", num_items: int = 0, max_seq_length: int = 8,
                hidden_size: int = 32) -> UniSRecConfig:
    encoder = EncoderConfig(hidden_size=hidden_size, n_layers=1, n_heads=2, inner_size=64, max_seq_length=max_seq_length)
    return UniSRecConfig(text_dim=text_dim, n_experts=2, mode=mode, num_items=num_items, encoder=encoder)


def make_model_dir(
    root: Path,
    ids: list[str],
    texts: list[str],
    features: np.ndarray,
    mode: str = "inductive",
    encoder_info: dict | None = None,
    seed: int = 0,
    model: UniSRec | None = None,
    max_seq_length: int = 8,
) -> Path:
    """Write a dataset dir with ``features`` (n + 1 rows, row 0 padding) and a model dir over it."""
    torch.manual_seed(seed)
    n = len(ids)
    assert features.shape[0] == n + 1
    if model is None:
        model = UniSRec(tiny_config(features.shape[1], mode, n if mode == "transductive" else 0, max_seq_length))
    ds = Dataset(
        name="toy",
        item_ids=list(ids),
        item_texts=list(texts),
        user_ids=["u0"],
        seq_offsets=np.array([0, n], dtype=np.int64),
        seq_items=np.arange(1, n + 1, dtype=np.int32),
    )
    ds.save(root / "data")
    (root / "data" / "features").mkdir()
    np.save(root / "data" / "features" / "feat.npy", features.astype(np.float32))
    info = dict(encoder_info or {"encoder": None, "dim": int(features.shape[1])})
    info.update(file="features/feat.npy", dim=int(features.shape[1]))
    ds.update_manifest(features={"feat": info}, default_features="feat")
    return save_model_dir(model, root / "model", ds, feature_name="feat")


def random_model_dir(root: Path, n: int = 50, text_dim: int = 16, mode: str = "inductive", seed: int = 0, **kw) -> Path:
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(n + 1, text_dim)).astype(np.float32)
    feats[0] = 0
    ids = [f"item-{i}" for i in range(1, n + 1)]
    texts = [f"text of item {i}" for i in range(1, n + 1)]
    return make_model_dir(root, ids, texts, feats, mode=mode, seed=seed, **kw)


SCIENCE_TEXTS = {
    "A1": "Digital caliper, stainless steel, 150 mm. Measuring tools. Mitutoyo.",
    "A2": "Nitrile gloves, powder free, box of 100. Lab safety. Kimberly-Clark.",
    "A3": "Borosilicate glass beaker set, 50 to 1000 ml. Lab glassware. Pyrex.",
    "A4": "Safety goggles, anti-fog, indirect vent. Lab safety. 3M.",
    "A5": "Micrometer, outside, 0-25 mm. Measuring tools. Starrett.",
    "A6": "Erlenmeyer flask, 250 ml, glass. Lab glassware. Kimble.",
    "A7": "Soldering iron kit, 60 W, adjustable temperature. Electronics tools. Weller.",
    "A8": "Digital multimeter, auto-ranging. Electronics tools. Fluke.",
}


def text_model_dir(root: Path, mode: str = "inductive", seed: int = 0) -> Path:
    """A model dir whose features are real TextEncoder vectors of SCIENCE_TEXTS (needs the encoder)."""
    enc = text_encoder_class()()
    ids, texts = list(SCIENCE_TEXTS), list(SCIENCE_TEXTS.values())
    feats = np.concatenate([np.zeros((1, enc.dim), np.float32), enc.encode(texts)])
    return make_model_dir(root, ids, texts, feats, mode=mode, encoder_info=enc.settings(), seed=seed)


class ServerThread:
    """A real uvicorn server on 127.0.0.1 and a free port, in a background thread."""

    def __init__(self, app):
        import threading

        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        import time

        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class HashEncoder:
    """A fast stand-in text encoder: a fixed pseudo-random unit vector per distinct text (so equal
    texts get equal features), plus a count of the texts it encoded."""

    def __init__(self, dim: int = 16):
        self.dim = dim
        self.encoded = 0

    def encode(self, texts) -> np.ndarray:
        import hashlib

        out = np.empty((len(texts), self.dim), np.float32)
        for row, text in enumerate(texts):
            seed = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")
            v = np.random.default_rng(seed).normal(size=self.dim)
            out[row] = v / np.linalg.norm(v)
        self.encoded += len(texts)
        return out


def hashed_model_dir(root: Path, n: int = 30, dim: int = 16, seed: int = 0) -> Path:
    """A tiny model dir whose features are HashEncoder vectors of its item texts: an item added with
    the same text as a catalogue item gets exactly that item's vector."""
    ids = [f"item-{i}" for i in range(1, n + 1)]
    texts = [f"text of item {i}" for i in range(1, n + 1)]
    feats = np.concatenate([np.zeros((1, dim), np.float32), HashEncoder(dim).encode(texts)])
    return make_model_dir(root, ids, texts, feats, seed=seed)
