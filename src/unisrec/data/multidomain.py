"""Several dataset directories as one pre-training corpus, without writing a merged copy.

Domain d's item indices 1..n_d become ``offset_d + 1 .. offset_d + n_d`` (offset_0 = 0, then
cumulative), so one index space of T = sum n_d items covers all domains and row 0 stays padding.
The feature table handed to the model has 1 + 2T rows: [padding, clean features of every domain,
word-drop ("feat2") features of every domain]; the word-drop copy of global item i is row i + T
(see ``data.augment.swap_word_drop_features``).

Examples are each domain's training prefixes (``Dataset.examples("train")``: targets at positions
1..len-3, the last two items held out for validation/test) -- what the authors' release
pre-trains on (the ``*.train.inter`` rows of its source domains). ``all_positions=True`` also
uses the last two positions, for source domains that are never evaluated.

This module imports numpy only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unisrec.data.augment import augment_batch
from unisrec.data.dataset import DEFAULT_MAX_HISTORY, Dataset, DatasetError


@dataclass
class DomainInfo:
    name: str
    path: str
    num_items: int
    offset: int
    num_examples: int
    features: str


class MultiDomainCorpus:
    """Padded histories / lengths / next items of every domain, item indices offset per domain."""

    def __init__(
        self,
        datasets: list[Dataset],
        feature_name: str | None = None,
        max_history: int = DEFAULT_MAX_HISTORY,
        all_positions: bool = False,
    ):
        if not datasets:
            raise DatasetError("pre-training needs at least one dataset directory")
        self.max_history = max_history
        self.domains: list[DomainInfo] = []
        hists, lens, targets, clean, augmented = [], [], [], [], []
        ref: tuple[str, dict[str, Any]] | None = None
        offset = 0
        for ds in datasets:
            name, info = ds.feature_info(feature_name)
            if ref is not None:
                _check_compatible(ref, (str(ds.path), info))
            else:
                ref = (str(ds.path), info)
            clean.append(np.asarray(ds.features(name))[1:])
            augmented.append(np.asarray(ds.features(name, augmented=True))[1:])
            splits = ("train", "valid", "test") if all_positions else ("train",)
            n_examples = 0
            for split in splits:
                h, l, t = ds.examples(split, max_history)
                # shift real items only; padding 0 stays 0
                hists.append(np.where(h > 0, h + offset, 0).astype(np.int32))
                lens.append(l.astype(np.int32))
                targets.append((t + offset).astype(np.int32))
                n_examples += len(t)
            if n_examples == 0:
                raise DatasetError(f"{ds.path}: no training examples (every user has fewer than 4 items)")
            self.domains.append(DomainInfo(ds.name, str(ds.path), ds.num_items, offset, n_examples, name))
            offset += ds.num_items
        self.num_items = offset
        self.history = np.concatenate(hists)
        self.lengths = np.concatenate(lens)
        self.targets = np.concatenate(targets)
        dim = clean[0].shape[1]
        table = np.zeros((1 + 2 * offset, dim), dtype=np.float32)
        table[1 : 1 + offset] = np.concatenate(clean)
        table[1 + offset :] = np.concatenate(augmented)
        self.feature_table = table
        self.text_dim = dim
        self.encoder_info = ref[1] if ref else {}

    @classmethod
    def from_dirs(cls, paths: list[str | os.PathLike], **kwargs: Any) -> "MultiDomainCorpus":
        return cls([Dataset.load(Path(p)) for p in paths], **kwargs)

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    @property
    def augmented_offset(self) -> int:
        """Row of item i's word-drop features is i + augmented_offset."""
        return self.num_items

    def batch(
        self, rows: np.ndarray, rng: np.random.Generator, item_drop_prob: float = 0.9, drop_prob: float = 0.2
    ) -> dict[str, np.ndarray]:
        """Histories, lengths, targets and the augmented view of ``rows`` (int64 arrays)."""
        hist = self.history[rows].astype(np.int64)
        lengths = self.lengths[rows].astype(np.int64)
        aug, aug_len = augment_batch(hist, lengths, rng, self.augmented_offset, item_drop_prob, drop_prob)
        return {
            "history": hist,
            "lengths": lengths,
            "aug_history": aug,
            "aug_lengths": aug_len,
            "targets": self.targets[rows].astype(np.int64),
        }

    def describe(self) -> list[dict[str, Any]]:
        return [vars(d).copy() for d in self.domains]


def _check_compatible(ref: tuple[str, dict[str, Any]], other: tuple[str, dict[str, Any]]) -> None:
    """All domains must share one text encoder: features of different encoders live in different
    spaces, and one adaptor cannot map both."""
    (p0, a), (p1, b) = ref, other
    if a.get("dim") != b.get("dim"):
        raise DatasetError(f"{p1}: features have dim {b.get('dim')} but {p0} has {a.get('dim')}; encode all domains with one encoder")
    ea, eb = a.get("encoder"), b.get("encoder")
    if ea is not None and eb is not None and ea != eb:
        raise DatasetError(f"{p1}: features come from encoder {eb!r} but {p0} uses {ea!r}; encode all domains with one encoder")
