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
Leave-one-out split (docs/protocol.md "Data protocol"): the last item is the test target, the second-to-last the
validation target, every earlier position t >= 1 is a training target with the prefix before it as
history.

This module imports numpy/pyarrow only (no torch), so `unisrec prepare` stays fast.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

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
        arr = load_array(self.path / info[key], mmap)
        if arr.ndim != 2 or arr.shape[0] != self.num_items + 1:
            raise DatasetError(f"{self.path / info[key]} has {arr.shape[0]} rows, expected {self.num_items + 1}")
        return arr

    # -------------------------------------------------------------- save/load
    def save(self, path: str | os.PathLike, overwrite: bool = True, *, force: bool = False,
             inputs: Iterable[str | os.PathLike | None] = ()) -> Path:
        """Write the dataset directory ``path`` atomically (see :mod:`unisrec.data.output`): built
        complete in a temporary sibling and swapped in, so a crash leaves the old or the new dataset.

        ``path`` may be new, an empty folder or a unisrec dataset (``overwrite=False`` refuses an
        existing one); a non-empty folder of other files needs ``force`` and keeps its files; an
        output that is or holds one of ``inputs`` is refused. Feature sets: those of the dataset
        being replaced are kept when the item table is unchanged (same ids and texts in the same
        order), else dropped and listed in ``manifest["features_dropped"]``; a dataset loaded from
        another folder brings its own feature files along.
        """
        from unisrec.data import output as out

        target = out.resolve_output(path)
        with out.writer_lock(target):
            kind = out.inspect_output(target, inputs, force)
            if kind != "new" and not overwrite:
                raise DatasetError(f"{target} exists")
            old = out.read_manifest(target) if kind == "dataset" else None
            tmp = out.make_temporary_sibling(target)
            try:
                manifest = self._write_tables(tmp)
                manifest.update(self._carry_features(tmp, target, old))
                write_json(tmp / MANIFEST, manifest)
                if kind in ("dataset", "foreign"):
                    out.carry_foreign(target, tmp, out.own_entries(target, old))
                out.install(tmp, target, kind)
            except OSError as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                raise out.write_error(target, exc) from None
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        self.path = target
        self.manifest = manifest
        return target

    def _write_tables(self, folder: Path) -> dict[str, Any]:
        """items.parquet, users.parquet, sequences.npz into ``folder``; returns the manifest to write."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        write_items_table(folder / "items.parquet", self.item_ids, self.item_texts)
        users = pa.table({"index": pa.array(np.arange(self.num_users, dtype=np.int32)),
                          "user_id": pa.array(self.user_ids, pa.string())})
        pq.write_table(users, folder / "users.parquet", compression="zstd", write_statistics=False)
        # np.savez with fixed names and no compression is byte-deterministic
        with open(folder / "sequences.npz", "wb") as fh:
            np.savez(fh, offsets=self.seq_offsets.astype(np.int64), items=self.seq_items.astype(np.int32))
        manifest = {k: v for k, v in self.manifest.items() if k not in ("features", "default_features", "features_dropped")}
        manifest.update(format_version=FORMAT_VERSION, name=self.name,
                        counts={"users": self.num_users, "items": self.num_items, "interactions": self.num_interactions})
        return manifest

    def _carry_features(self, folder: Path, target: Path, old: dict | None) -> dict[str, Any]:
        """Feature files to bring into the new ``folder`` and the manifest entries that say so.

        Feature sets of a replaced dataset whose item table changed are dropped from ``features``
        but their files stay as the encode cache (``features_dropped["cache"]``): `unisrec encode`
        then re-encodes only the texts it has no vector for."""
        source, feats, default = target, {}, None
        cache = dict(((old or {}).get("features_dropped") or {}).get("cache") or {})
        if old and old.get("features"):
            if self._same_items(target):
                feats, default = old["features"], old.get("default_features")
            else:
                cache.update(old["features"])
        elif self.path is not None and Path(self.path).resolve() != target and self.manifest.get("features"):
            source, feats, default = Path(self.path), self.manifest["features"], self.manifest.get("default_features")
        for info in [*feats.values(), *cache.values()]:
            for key in ("file", "augmented_file", "keys_file"):
                if info.get(key) and (source / info[key]).is_file() and not (folder / info[key]).exists():
                    (folder / info[key]).parent.mkdir(exist_ok=True)
                    try:
                        os.link(source / info[key], folder / info[key])
                    except OSError:  # another file system, or links not allowed: copy
                        shutil.copy2(source / info[key], folder / info[key])
        out: dict[str, Any] = {"features": dict(feats)}
        if default:
            out["default_features"] = default
        if cache:
            out["features_dropped"] = {"sets": sorted(cache), "cache": cache,
                                       "reason": "the item table changed (item ids, texts or their order); "
                                                 "run `unisrec encode` again (unchanged texts are not re-encoded)"}
        return out

    def _same_items(self, other: Path) -> bool:
        """True if dataset ``other`` has exactly this item table (ids and texts, in order)."""
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(other / "items.parquet", columns=["item_id", "text"])
        except (OSError, ValueError, KeyError):
            return False
        return table.column("item_id").to_pylist() == list(self.item_ids) and \
            table.column("text").to_pylist() == list(self.item_texts)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Dataset":
        path = Path(path)
        mf = path / MANIFEST
        if not mf.is_file():
            raise DatasetError(f"{path} is not a unisrec dataset directory (no {MANIFEST}); create one with `unisrec prepare`")
        manifest = _read_manifest_file(mf)
        if manifest.get("format_version") != FORMAT_VERSION:
            raise DatasetError(f"{mf}: format_version {manifest.get('format_version')!r}, this unisrec reads {FORMAT_VERSION}")
        items = _read_parquet(path / "items.parquet", ("item_id", "text"))
        users = _read_parquet(path / "users.parquet", ("user_id",))
        offsets, seq = _read_sequences(path / "sequences.npz")
        ds = cls(
            name=manifest.get("name", path.name),
            item_ids=items["item_id"],
            item_texts=items["text"],
            user_ids=users["user_id"],
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


def _damaged(path: Path, exc: BaseException) -> DatasetError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return DatasetError(f"{path}: cannot be read ({reason}); the file is missing, truncated or damaged -- "
                        "prepare (or encode) the dataset again")


def _read_manifest_file(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _damaged(path, exc) from None
    if not isinstance(manifest, dict):
        raise DatasetError(f"{path}: not a JSON object; the manifest is damaged -- prepare the dataset again")
    return manifest


def _read_parquet(path: Path, columns: tuple[str, ...]) -> dict[str, list]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=list(columns))
        return {c: table.column(c).to_pylist() for c in columns}
    except (OSError, ValueError, KeyError, pa.ArrowException) as exc:
        raise _damaged(path, exc) from None


def _read_sequences(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import zipfile

    try:
        with np.load(path) as z:
            return z["offsets"], z["items"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise _damaged(path, exc) from None


def load_array(path: Path, mmap: bool = True) -> np.ndarray:
    """``np.load`` of a feature file, with a one-line error naming a missing or damaged file."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None)
    except (OSError, ValueError, EOFError) as exc:
        raise _damaged(path, exc) from None


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
    try:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
