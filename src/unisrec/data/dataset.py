"""The on-disk dataset directory: one domain, self-describing, fast to load.

Layout (format version 1)::

    DIR/
      manifest.json        name, source, counts, filters, dropped-record counts, feature sets
      items.parquet        index (int32, 1..n_items), item_id (str, raw id), text (str)
      users.parquet        index (int32, 0..n_users-1), user_id (str, raw id)
      sequences.npz        offsets (int64, n_users+1), items (int32, 1-based item indices)
      features/NAME.npy    float32 (n_items + 1, dim), row 0 = padding (zeros); np.load(mmap_mode="r")

Item index 0 is padding everywhere. Each user's sequence is ordered oldest first and holds the
whole interaction history (no cap): the 50-item history window is applied when examples are built.
Leave-one-out split (SPEC "Data protocol"): the last item is the test target, the second-to-last the
validation target, every earlier position t >= 1 is a training target with the prefix before it as
history.

This module imports numpy/pyarrow only (no torch), so `unisrec prepare` stays fast.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unisrec.errors import UserError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DEFAULT_MAX_HISTORY = 50


class DatasetError(UserError):
    """A dataset directory that is missing, incomplete or inconsistent."""


@dataclass
class Dataset:
    """One domain: item catalogue, ordered user sequences and metadata.

    ``seq_items[seq_offsets[u]:seq_offsets[u+1]]`` is user ``u``'s sequence of 1-based item indices.
    """

    name: str
    item_ids: list[str]
    item_texts: list[str]
    user_ids: list[str]
    seq_offsets: np.ndarray
    seq_items: np.ndarray
    manifest: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    # ----------------------------------------------------------------- sizes
    @property
    def num_items(self) -> int:
        """Real items (padding excluded); valid indices are 1..num_items."""
        return len(self.item_ids)

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_interactions(self) -> int:
        return int(self.seq_items.shape[0])

    @property
    def seq_lengths(self) -> np.ndarray:
        return np.diff(self.seq_offsets)

    def sequence(self, user: int) -> np.ndarray:
        return self.seq_items[self.seq_offsets[user] : self.seq_offsets[user + 1]]

    # -------------------------------------------------------------- examples
    def split_positions(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(user index, absolute target position in ``seq_items``) of every example of a split.

        train: every position t with 1 <= t <= len-3 of each user; valid: t = len-2; test: t = len-1.
        Users too short for a split contribute nothing to it. Vectorised, no per-user loop.
        """
        lengths = self.seq_lengths
        starts = self.seq_offsets[:-1]
        if split in ("valid", "test"):
            back = 2 if split == "valid" else 1
            # the target needs a non-empty history before it
            users = np.nonzero(lengths >= back + 1)[0].astype(np.int64)
            return users, (starts[users] + lengths[users] - back).astype(np.int64)
        if split == "train":
            n_train = np.maximum(lengths - 3, 0)  # targets at positions 1..len-3
            users = np.repeat(np.arange(self.num_users, dtype=np.int64), n_train)
            rank_in_user = np.arange(int(n_train.sum()), dtype=np.int64) - np.repeat(np.cumsum(n_train) - n_train, n_train)
            return users, starts[users] + 1 + rank_in_user
        raise ValueError(f"unknown split {split!r}; expected train, valid or test")

    def examples(self, split: str, max_history: int = DEFAULT_MAX_HISTORY) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Padded histories of a split: (history [n, max_history], history lengths [n], targets [n]).

        Histories are left-aligned (real items first, zeros after), oldest first, holding the last
        ``max_history`` items before the target -- the layout of the authors' release.
        """
        users, pos = self.split_positions(split)
        starts = self.seq_offsets[users]
        hist_len = np.minimum(pos - starts, max_history)
        first = pos - hist_len
        cols = np.arange(max_history, dtype=np.int64)
        idx = first[:, None] + cols[None, :]
        valid = cols[None, :] < hist_len[:, None]
        hist = np.where(valid, self.seq_items[np.minimum(idx, len(self.seq_items) - 1)], 0).astype(np.int64)
        return hist, hist_len.astype(np.int64), self.seq_items[pos].astype(np.int64)

    # -------------------------------------------------------------- features
    def feature_names(self) -> list[str]:
        return sorted(self.manifest.get("features", {}))

    def feature_info(self, name: str | None = None) -> tuple[str, dict[str, Any]]:
        feats = self.manifest.get("features", {})
        if name is None:
            name = self.manifest.get("default_features")
        if not feats or name is None:
            raise DatasetError(
                f"dataset {self.path or self.name} has no text features; run `unisrec encode {self.path or 'DIR'}` first"
            )
        if name not in feats:
            raise DatasetError(f"dataset {self.path or self.name} has no feature set {name!r}; it has: {', '.join(sorted(feats))}")
        return name, feats[name]

    def features(self, name: str | None = None, augmented: bool = False, mmap: bool = True) -> np.ndarray:
        """Item-text features as a (num_items + 1, dim) float32 array, row 0 = padding.

        ``augmented=True`` returns the word-drop copy ("feat2") recorded beside the clean one.
        """
        if self.path is None:
            raise DatasetError("features are stored on disk; save the dataset first")
        name, info = self.feature_info(name)
        key = "augmented_file" if augmented else "file"
        if key not in info:
            raise DatasetError(
                f"feature set {name!r} of {self.path} has no word-drop copy; run `unisrec encode {self.path} --word-drop 0.15`"
            )
        arr = np.load(self.path / info[key], mmap_mode="r" if mmap else None)
        if arr.shape[0] != self.num_items + 1:
            raise DatasetError(f"{self.path / info[key]} has {arr.shape[0]} rows, expected {self.num_items + 1}")
        return arr

    # -------------------------------------------------------------- save/load
    def save(self, path: str | os.PathLike, overwrite: bool = True) -> Path:
        """Write atomically: a temporary sibling directory renamed into place, so a failed run never
        leaves a half-written dataset that looks complete. Existing feature files are kept only if the
        caller copied them (prepare builds a new dataset, so it has none)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and not overwrite:
            raise DatasetError(f"{path} exists")
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        try:
            write_items_table(tmp / "items.parquet", self.item_ids, self.item_texts)
            pq.write_table(
                pa.table(
                    {
                        "index": pa.array(np.arange(self.num_users, dtype=np.int32)),
                        "user_id": pa.array(self.user_ids, pa.string()),
                    }
                ),
                tmp / "users.parquet",
                compression="zstd",
                write_statistics=False,
            )
            # np.savez with fixed names and no compression is byte-deterministic
            with open(tmp / "sequences.npz", "wb") as fh:
                np.savez(fh, offsets=self.seq_offsets.astype(np.int64), items=self.seq_items.astype(np.int32))
            manifest = dict(self.manifest)
            manifest.update(
                format_version=FORMAT_VERSION,
                name=self.name,
                counts={
                    "users": self.num_users,
                    "items": self.num_items,
                    "interactions": self.num_interactions,
                },
            )
            manifest.setdefault("features", {})
            write_json(tmp / MANIFEST, manifest)
            if self.path is not None and (self.path / "features").is_dir() and manifest["features"]:
                shutil.copytree(self.path / "features", tmp / "features")
            if path.exists():
                old = path.with_name(f".{path.name}.old-{os.getpid()}")
                os.rename(path, old)
                os.rename(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.path = path
        self.manifest = manifest
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Dataset":
        import pyarrow.parquet as pq

        path = Path(path)
        mf = path / MANIFEST
        if not mf.is_file():
            raise DatasetError(f"{path} is not a unisrec dataset directory (no {MANIFEST}); create one with `unisrec prepare`")
        manifest = json.loads(mf.read_text())
        if manifest.get("format_version") != FORMAT_VERSION:
            raise DatasetError(f"{mf}: format_version {manifest.get('format_version')!r}, this unisrec reads {FORMAT_VERSION}")
        items = pq.read_table(path / "items.parquet")
        users = pq.read_table(path / "users.parquet")
        with np.load(path / "sequences.npz") as z:
            offsets, seq = z["offsets"], z["items"]
        ds = cls(
            name=manifest["name"],
            item_ids=items.column("item_id").to_pylist(),
            item_texts=items.column("text").to_pylist(),
            user_ids=users.column("user_id").to_pylist(),
            seq_offsets=offsets,
            seq_items=seq,
            manifest=manifest,
            path=path,
        )
        if len(offsets) != ds.num_users + 1 or (len(seq) and (seq.min() < 1 or seq.max() > ds.num_items)):
            raise DatasetError(f"{path}: sequences.npz does not match items.parquet/users.parquet")
        return ds

    def update_manifest(self, **changes: Any) -> None:
        """Rewrite manifest.json in place (atomically) with ``changes`` merged in."""
        if self.path is None:
            raise DatasetError("dataset has no directory")
        self.manifest.update(changes)
        write_json(self.path / MANIFEST, self.manifest)


def write_items_table(path: str | os.PathLike, item_ids: list[str], item_texts: list[str]) -> None:
    """items.parquet: index (1..n, 0 is padding), raw item_id, text -- for datasets and model catalogues."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "index": pa.array(np.arange(1, len(item_ids) + 1, dtype=np.int32)),
            "item_id": pa.array(item_ids, pa.string()),
            "text": pa.array(item_texts, pa.string()),
        }
    )
    pq.write_table(table, path, compression="zstd", write_statistics=False)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Deterministic, atomic JSON write (sorted keys, 2-space indent, trailing newline)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
