"""Shared last steps of every interaction source: de-duplicate, k-core, order, split, save.

A source reads its files into flat columns (user id, item id, time, extra de-duplication keys) and
an item-text lookup; :func:`assemble_dataset` turns them into a :class:`Dataset` whose manifest says
what was done and how many records each step dropped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from unisrec.data.dataset import DEFAULT_MAX_HISTORY, Dataset
from unisrec.data.kcore import kcore_filter
from unisrec.data.records import BadRecords, InputError
from unisrec.data.sequences import TIE_ORDERS, build_sequences

DUPLICATES = ("drop", "error")


def encode(ids: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Dense int64 codes numbered by first appearance, and the distinct values (Arrow strings)."""
    enc = pc.dictionary_encode(ids)
    if isinstance(enc, pa.ChunkedArray):
        enc = enc.combine_chunks()
    return enc.indices.to_numpy(zero_copy_only=False).astype(np.int64), enc.dictionary


def duplicate_rows(keys: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mask of rows equal on every key to an earlier row, and for each such row an earlier equal row.

    ``keys[0]``/``keys[1]`` are the user/item codes. They are packed into one int64 and sorted once
    (stable, so equal rows stay in input order and the first occurrence is kept); only the few rows
    that share a (user, item) pair are then compared on the remaining keys.
    """
    n = len(keys[0])
    dup = np.zeros(n, dtype=bool)
    earlier = np.full(n, -1, dtype=np.int64)
    if n < 2:
        return dup, earlier
    pair = keys[0].astype(np.int64) * (int(keys[1].max()) + 1) + keys[1]
    order = np.argsort(pair, kind="stable")
    ps = pair[order]
    shared = np.zeros(n, dtype=bool)
    eq = ps[1:] == ps[:-1]
    shared[1:] |= eq
    shared[:-1] |= eq
    cand = np.sort(order[shared])  # rows whose (user, item) pair occurs more than once, in input order
    if len(cand) < 2:
        return dup, earlier
    sub = [pair[cand]] + [k[cand] for k in keys[2:]]
    sub_order = np.lexsort(sub[::-1])
    same = np.ones(len(cand) - 1, dtype=bool)
    for key in sub:
        ks = key[sub_order]
        same &= ks[1:] == ks[:-1]
    later = cand[sub_order[1:][same]]
    dup[later] = True
    earlier[later] = cand[sub_order[:-1][same]]
    return dup, earlier


def assemble_dataset(
    *,
    name: str,
    users: np.ndarray,
    items: np.ndarray,
    times: np.ndarray,
    user_values: pa.Array,
    item_values: pa.Array,
    item_texts: Callable[[np.ndarray], list[str]],
    bad: BadRecords,
    where: Callable[[int], str],
    dedup_keys: dict[str, np.ndarray] | None = None,
    duplicates: str = "drop",
    item_allowed: np.ndarray | None = None,
    item_drop_reason: str = "no_meta",
    min_user: int = 5,
    min_item: int = 5,
    max_history: int = DEFAULT_MAX_HISTORY,
    manifest: dict | None = None,
    ties: str = "input-order",
    tie_seed: int = 0,
) -> Dataset:
    """Interactions (one row each: user code, item code, time) -> a leave-one-out :class:`Dataset`.

    Steps, in the release's order: exact duplicates removed (``dedup_keys`` beside user/item decide
    what "exact" means; ``duplicates="error"`` fails instead), interactions with an item outside
    ``item_allowed`` dropped (e.g. no meta record), iterative (min_user, min_item)-core, then each
    user's items in time order (ties by input row, or shuffled with ``tie_seed`` when ``ties="shuffle"``)
    -> CSR sequences. ``item_texts(codes)`` gives the text of the kept items. Every drop is counted in ``bad.dropped``.
    """
    if ties not in TIE_ORDERS:
        raise InputError(f"--ties must be one of {', '.join(TIE_ORDERS)}, not {ties!r}")
    if duplicates not in DUPLICATES:
        raise InputError(f"--duplicates must be one of {', '.join(DUPLICATES)}, not {duplicates!r}")
    n_raw = len(users)
    rows = np.arange(n_raw, dtype=np.int64)
    steps: list[dict] = [{"step": "read", "interactions": int(n_raw)}]

    dedup_keys = dedup_keys or {}
    dup, earlier = duplicate_rows([users, items, *dedup_keys.values()])
    if dup.any():
        if duplicates == "error":
            k = int(np.argmax(dup))
            raise InputError(f"{where(k)}: duplicate record (same as {where(int(earlier[k]))}); "
                             "pass --duplicates drop to keep only the first of identical records")
        bad.drop("duplicate", int(dup.sum()))
    keep = ~dup
    steps.append({"step": "deduplicate", "keys": ["user", "item", *dedup_keys],
                  "dropped": int(dup.sum())})

    if item_allowed is not None:
        ok = item_allowed[items] & keep
        bad.drop(item_drop_reason, int((keep & ~ok).sum()))
        steps.append({"step": f"drop items ({item_drop_reason})", "dropped": int((keep & ~ok).sum())})
        keep = ok

    rows = rows[keep]
    u, i, t = users[rows], items[rows], times[rows]
    core, rounds = kcore_filter(u, i, min_user, min_item)
    bad.drop("kcore", int((~core).sum()))
    steps.append({"step": "k-core", "min_user": min_user, "min_item": min_item, "rounds": rounds,
                  "dropped": int((~core).sum())})
    u, i, t = u[core], i[core], t[core]
    if len(u) == 0:
        raise InputError(f"no interactions left after filtering ({', '.join(f'{k}: {v}' for k, v in bad.as_dict().items())}); "
                         "lower --min-user/--min-item or check the input")

    shuffle_seed = tie_seed if ties == "shuffle" else None
    user_codes, item_codes, offsets, seq_items = build_sequences(u, i, t, shuffle_seed)
    texts = item_texts(item_codes)
    meta = dict(manifest or {})
    meta.update(
        filters=steps,
        dropped=bad.as_dict(),
        bad_line_examples=dict(sorted(bad.examples.items())),
        split={"protocol": "leave-one-out", "given": False, "order": "time, ties by input row" if shuffle_seed is None else f"time, ties shuffled (seed {shuffle_seed})",
               "max_history": max_history},
    )
    return Dataset(
        name=name,
        item_ids=item_values.take(pa.array(item_codes)).to_pylist(),
        item_texts=texts,
        user_ids=user_values.take(pa.array(user_codes)).to_pylist(),
        seq_offsets=offsets,
        seq_items=seq_items,
        manifest=meta,
    )


def describe_inputs(**paths: Path | None) -> dict:
    """Input files for the manifest: name -> {path as given, size in bytes}."""
    out = {}
    for key, p in paths.items():
        if p is not None:
            p = Path(p)
            out[key] = {"path": str(p), "bytes": p.stat().st_size if p.is_file() else None}
    return out
