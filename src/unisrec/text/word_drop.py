"""Word-drop augmentation of item texts: the "feat2" copy that pre-training's Eq. (9) draws from.

Each whitespace-separated word of a text is dropped with probability ``p``; the survivors are
joined by single spaces. Two deliberate choices (the authors' release uses ``random.random()`` per
word in item order and may drop every word):

* the draw for a word is a hash of (seed, the text's content hash, the word's position), so a
  text's augmented version depends only on the text, ``p`` and ``seed`` -- not on which other
  items are in the catalogue or their order. Re-encoding after a catalogue change therefore
  reproduces the unchanged items' augmented vectors, and the feature cache stays valid for them;
* a text never loses all its words: if every draw says "drop", the word with the largest draw
  (the one closest to being kept) is kept. Empty texts stay empty.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def text_keys(texts: Sequence[str | None]) -> np.ndarray:
    """A 64-bit content hash per text (blake2b), uint64; None counts as the empty string."""
    keys = np.empty(len(texts), dtype=np.uint64)
    for i, t in enumerate(texts):  # hashlib is C; the loop is ~1 s per million texts
        keys[i] = int.from_bytes(hashlib.blake2b((t or "").encode("utf-8"), digest_size=8).digest(), "little")
    return keys


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser, vectorised: a good 64-bit mix for counter-based random numbers."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = x + _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def word_drop(texts: Sequence[str | None], p: float, seed: int, keys: np.ndarray | None = None) -> list[str]:
    """Texts with each word dropped with probability ``p`` (deterministic in ``seed``; see module doc)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"word-drop probability must be in [0, 1), got {p}")
    words = [(t or "").split() for t in texts]
    if p == 0.0:
        return [" ".join(w) for w in words]
    keys = text_keys(texts) if keys is None else keys
    counts = np.fromiter((len(w) for w in words), dtype=np.int64, count=len(words))
    total = int(counts.sum())
    owner = np.repeat(np.arange(len(words)), counts)
    position = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    with np.errstate(over="ignore"):
        salt = splitmix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF))
        x = splitmix64(keys[owner] ^ salt) + position.astype(np.uint64) * _GOLDEN
    u = (splitmix64(x) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
    keep = u >= p
    # never drop a whole text: keep its word with the largest draw
    kept_per_text = np.bincount(owner, weights=keep, minlength=len(words))
    empty = np.nonzero((kept_per_text == 0) & (counts > 0))[0]
    if len(empty):
        starts = np.cumsum(counts) - counts
        best = np.maximum.reduceat(u, starts[counts > 0]) if total else np.empty(0)
        best_of = np.zeros(len(words))
        best_of[counts > 0] = best
        keep |= np.isin(owner, empty) & (u == best_of[owner])
    out, start = [], 0
    for w, c in zip(words, counts):
        k = keep[start : start + c]
        out.append(" ".join(x for x, flag in zip(w, k) if flag))
        start += c
    return out
