"""Shared steps of every interaction source: options, de-duplicate, k-core, order, split, save.

A source reads its files into :class:`Interactions` (flat columns: user code, item code, time,
extra de-duplication keys, and an item-text lookup) and hands them to :func:`finish_prepare`, which
filters, orders, splits (:func:`assemble_dataset`) and writes the dataset directory; the manifest says
what was done and how many records each step dropped. :class:`PrepareOptions` holds the options
every source shares; ``prepare_*`` functions take them as keyword arguments or as ``options=``.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from unisrec.data.dataset import DEFAULT_MAX_HISTORY, Dataset
from unisrec.data.kcore import kcore_filter
from unisrec.data.output import inspect_output, resolve_output, writer_lock
from unisrec.data.records import ON_BAD_LINES, BadRecords, InputError
from unisrec.data.sequences import TIE_ORDERS, build_sequences

DUPLICATES = ("drop", "error")


@dataclass(frozen=True)
class PrepareOptions:
    """What every ``prepare`` source shares (the CLI builds one from its common flags).

    ``output``: dataset directory to write (None: build in memory only); ``force``: allow writing
    into an existing non-empty folder that is not a unisrec dataset (its files are never deleted).
    The k-core, duplicate and tie options do not apply to ``prepare atomic`` (its split is given).
    """

    output: str | Path | None = None
    name: str | None = None
    min_user: int = 5
    min_item: int = 5
    max_history: int = DEFAULT_MAX_HISTORY
    on_bad_lines: str = "error"
    duplicates: str = "drop"
    ties: str = "input-order"
    tie_seed: int = 0
    force: bool = False

    @classmethod
    def build(cls, output: str | Path | None = None, options: PrepareOptions | None = None, **overrides: Any) -> PrepareOptions:
        """``options`` (or the defaults) with ``output`` and keyword ``overrides`` applied; an unknown
        keyword is a TypeError, as for any function."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
                            f"prepare options are: {', '.join(sorted(known))}")
        opts = replace(options or cls(), **overrides)
        if output is not None:
            opts = replace(opts, output=output)
        opts.check()
        return opts

    def check(self) -> None:
        if self.ties not in TIE_ORDERS:
            raise InputError(f"--ties must be one of {', '.join(TIE_ORDERS)}, not {self.ties!r}")
        if self.duplicates not in DUPLICATES:
            raise InputError(f"--duplicates must be one of {', '.join(DUPLICATES)}, not {self.duplicates!r}")
        if self.on_bad_lines not in ON_BAD_LINES:
            raise InputError(f"--on-bad-lines must be one of {', '.join(ON_BAD_LINES)}, not {self.on_bad_lines!r}")
        for opt, value in (("--min-user", self.min_user), ("--min-item", self.min_item), ("--max-history", self.max_history)):
            if value < 1:
                raise InputError(f"{opt} must be at least 1, got {value}")

    def record(self, kcore: bool = True) -> dict[str, Any]:
        """The options as the manifest's ``options`` entry records them."""
        keys = ("min_user", "min_item", "max_history", "on_bad_lines", "duplicates", "ties", "tie_seed") if kcore \
            else ("max_history", "on_bad_lines")
        return {k: v for k, v in asdict(self).items() if k in keys}

    def dataset_name(self, fallback: str) -> str:
        """``name``, else the output folder's name, else ``fallback``."""
        if self.name:
            return self.name
        if self.output is not None:
            return Path(self.output).resolve().name or fallback
        return fallback


@dataclass
class Interactions:
    """One source's interactions as flat columns, ready for :func:`assemble_dataset`.

    ``users``/``items``: int64 codes into ``user_values``/``item_values``; ``times``: float64 seconds;
    ``item_texts(codes)``: texts of kept item codes; ``where(row)``: "file, line N" of a row;
    ``dedup_keys``: further columns that must be equal for two records to be duplicates;
    ``item_allowed``: per item code, False drops its interactions (counted as ``item_drop_reason``).
    """

    users: np.ndarray
    items: np.ndarray
    times: np.ndarray
    user_values: pa.Array
    item_values: pa.Array
    item_texts: Callable[[np.ndarray], list[str]]
    where: Callable[[int], str]
    dedup_keys: dict[str, np.ndarray] = field(default_factory=dict)
    item_allowed: np.ndarray | None = None
    item_drop_reason: str = "no_meta"


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


def no_interactions_message(read: int, dropped: dict[str, int], inputs: dict[str, Path | None], min_user: int,
                            min_item: int) -> str:
    """Why a prepare has nothing to write: no interaction was read at all, or every one read was filtered
    out (with the count per reason and the k-core's thresholds), prefixed by the input files."""
    files = " + ".join(str(p) for p in inputs.values() if p is not None)
    where = f"{files}: " if files else ""
    reasons = ", ".join(f"{k}: {v:,}" for k, v in dropped.items() if v)
    if read == 0:
        return (f"{where}no interactions to read" + (f" (dropped while reading: {reasons})" if reasons else " (no data rows)")
                + "; check the input")
    return (f"{where}no interactions left after filtering: all {read:,} read were dropped ({reasons}); the k-core keeps "
            f"users with at least {min_user} and items with at least {min_item} interactions: lower --min-user/--min-item "
            "or check the input")


def assemble_dataset(inter: Interactions, bad: BadRecords, opts: PrepareOptions, *, name: str,
                     manifest: dict | None = None, inputs: dict[str, Path | None] | None = None) -> Dataset:
    """Interactions -> a leave-one-out :class:`Dataset` (not written; see :func:`finish_prepare`).

    Steps, in the release's order: exact duplicates removed (``inter.dedup_keys`` beside user/item
    decide what "exact" means; ``duplicates="error"`` fails instead), interactions with an item outside
    ``inter.item_allowed`` dropped (e.g. no meta record), iterative (min_user, min_item)-core, then each
    user's items in time order (ties by input row, or shuffled with ``tie_seed`` when ``ties="shuffle"``)
    -> CSR sequences. Every drop is counted in ``bad.dropped`` and each step in the manifest's ``filters``.
    ``inputs`` (name -> file) only name the files in the error when nothing is left.
    """
    opts.check()
    steps: list[dict] = [{"step": "read", "interactions": int(len(inter.users))}]
    keep = _deduplicate(inter, bad, opts.duplicates, steps)
    if inter.item_allowed is not None:
        ok = inter.item_allowed[inter.items] & keep
        reason = inter.item_drop_reason
        bad.drop(reason, int((keep & ~ok).sum()))
        steps.append({"step": f"drop items ({reason})", "dropped": int((keep & ~ok).sum())})
        keep = ok
    u, i, t = inter.users[keep], inter.items[keep], inter.times[keep]
    core, rounds = kcore_filter(u, i, opts.min_user, opts.min_item)
    bad.drop("kcore", int((~core).sum()))
    steps.append({"step": "k-core", "min_user": opts.min_user, "min_item": opts.min_item, "rounds": rounds,
                  "dropped": int((~core).sum())})
    u, i, t = u[core], i[core], t[core]
    if len(u) == 0:
        raise InputError(no_interactions_message(steps[0]["interactions"], bad.as_dict(), inputs or {},
                                                 opts.min_user, opts.min_item))

    shuffle_seed = opts.tie_seed if opts.ties == "shuffle" else None
    user_codes, item_codes, offsets, seq_items = build_sequences(u, i, t, shuffle_seed)
    order = "time, ties by input row" if shuffle_seed is None else f"time, ties shuffled (seed {shuffle_seed})"
    meta = dict(manifest or {})
    meta.update(
        filters=steps,
        dropped=bad.as_dict(),
        bad_line_examples=dict(sorted(bad.examples.items())),
        split={"protocol": "leave-one-out", "given": False, "order": order, "max_history": opts.max_history},
    )
    return Dataset(
        name=name,
        item_ids=inter.item_values.take(pa.array(item_codes)).to_pylist(),
        item_texts=inter.item_texts(item_codes),
        user_ids=inter.user_values.take(pa.array(user_codes)).to_pylist(),
        seq_offsets=offsets,
        seq_items=seq_items,
        manifest=meta,
    )


def _deduplicate(inter: Interactions, bad: BadRecords, duplicates: str, steps: list[dict]) -> np.ndarray:
    """Mask of the rows kept after removing exact duplicates (or an error naming the first one)."""
    dup, earlier = duplicate_rows([inter.users, inter.items, *inter.dedup_keys.values()])
    if dup.any():
        if duplicates == "error":
            k = int(np.argmax(dup))
            raise InputError(f"{inter.where(k)}: duplicate record (same as {inter.where(int(earlier[k]))}); "
                             "pass --duplicates drop to keep only the first of identical records")
        bad.drop("duplicate", int(dup.sum()))
    steps.append({"step": "deduplicate", "keys": ["user", "item", *inter.dedup_keys], "dropped": int(dup.sum())})
    return ~dup


@contextmanager
def preparing(opts: PrepareOptions, inputs: dict[str, Path | None]) -> Iterator[None]:
    """Around a whole prepare run: the output is checked before any input is read (a refused output
    fails at once, not after minutes of parsing) and its writer lock is held until the dataset is
    written, so a second writer of the same folder is refused at once."""
    if opts.output is None:
        yield
        return
    target = resolve_output(opts.output)
    with writer_lock(target):
        inspect_output(target, inputs.values(), opts.force)
        yield


def finish_prepare(inter: Interactions, bad: BadRecords, opts: PrepareOptions, *, source: str,
                   inputs: dict[str, Path | None], default_name: str, options: dict | None = None,
                   manifest: dict | None = None) -> Dataset:
    """The last steps every filtering source shares: assemble (filter, order, split), record the
    source, inputs and options in the manifest, and write ``opts.output`` if set."""
    meta = {"source": source, "inputs": describe_inputs(**inputs), "options": {**opts.record(), **(options or {})}}
    meta.update(manifest or {})
    ds = assemble_dataset(inter, bad, opts, name=opts.dataset_name(default_name), manifest=meta, inputs=inputs)
    return write_prepared(ds, opts, inputs)


def write_prepared(ds: Dataset, opts: PrepareOptions, inputs: dict[str, Path | None]) -> Dataset:
    """Write a prepared dataset to ``opts.output`` (if set); returns it."""
    if opts.output is not None:
        ds.save(opts.output, force=opts.force, inputs=inputs.values())
    return ds


def describe_inputs(**paths: Path | None) -> dict:
    """Input files for the manifest: name -> {path as given, size in bytes}."""
    out = {}
    for key, p in paths.items():
        if p is not None:
            p = Path(p)
            out[key] = {"path": str(p), "bytes": p.stat().st_size if p.is_file() else None}
    return out
