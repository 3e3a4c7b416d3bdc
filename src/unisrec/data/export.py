"""Dataset -> RecBole atomic files (the layout of the UniSRec release), for cross-checks with RecBole.

Writes ``NAME.train.inter``, ``NAME.valid.inter``, ``NAME.test.inter`` (user index, space-separated
history of 0-based item indices oldest first, capped at ``max_history``, target), ``NAME.text``
(raw item id, text), ``NAME.item2index`` and ``NAME.user2index`` (raw id, 0-based index). Item
index k in the files is our item k+1. Train rows are written per user from the longest prefix down,
as the release does, so ``prepare atomic`` on a release folder followed by ``export-atomic`` gives
back its .inter files byte for byte.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from unisrec.errors import UserError
from unisrec.data.dataset import DEFAULT_MAX_HISTORY, Dataset
from unisrec.data.output import (OutputError, inspect_output, install, make_temporary_sibling, resolve_output,
                                  write_error, writer_lock)

INTER_HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token\n"


def _inter_lines(ds: Dataset, split: str, max_history: int) -> bytes:
    users, _ = ds.split_positions(split)
    hist, lens, tgt = ds.examples(split, max_history=max_history)
    if split == "train":  # release order: each user's longest prefix first
        order = np.lexsort((-np.arange(len(users)), users))
        users, hist, lens, tgt = users[order], hist[order], lens[order], tgt[order]
    mask = np.arange(hist.shape[1])[None, :] < lens[:, None]
    values = pa.array((hist[mask] - 1).astype(np.int64)).cast(pa.string())
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), values), " ")
    lines = pc.binary_join_element_wise(pa.array(users.astype(np.int64)).cast(pa.string()), joined,
                                        pa.array((tgt - 1).astype(np.int64)).cast(pa.string()), "\t")
    body = "\n".join(lines.to_pylist())
    return (INTER_HEADER + body + ("\n" if body else "")).encode("utf-8")


def export_atomic(dataset: Dataset | str | Path, output: str | Path, *, name: str | None = None,
                  max_history: int = DEFAULT_MAX_HISTORY) -> Path:
    """Write the atomic files of ``dataset`` into the folder ``output`` (atomically: temp + rename)."""
    ds = dataset if isinstance(dataset, Dataset) else Dataset.load(dataset)
    name = name or ds.name
    output = resolve_output(output)
    files = [f"{name}.{k}" for k in ("train.inter", "valid.inter", "test.inter", "text", "item2index", "user2index")]
    with writer_lock(output):
        kind = inspect_output(output, [ds.path], force=True)
        if kind == "dataset" or (kind == "foreign" and any(p.name not in files for p in output.iterdir())):
            raise OutputError(f"{output} holds files export-atomic does not write; choose a new or empty folder "
                              "(it replaces only a folder of its own NAME.* files)")
        tmp = make_temporary_sibling(output)
        try:
            _write_atomic_files(ds, tmp, name, max_history)
            install(tmp, output, kind)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise write_error(output, exc) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return output


def _write_atomic_files(ds: Dataset, folder: Path, name: str, max_history: int) -> None:
    for split in ("train", "valid", "test"):
        (folder / f"{name}.{split}.inter").write_bytes(_inter_lines(ds, split, max_history))
    for item_id, text in zip(ds.item_ids, ds.item_texts):
        if "\t" in text or "\n" in text:
            raise UserError(f"{ds.path or ds.name}: the text of item {item_id!r} holds a tab or newline, "
                            "which RecBole atomic files cannot represent")
    (folder / f"{name}.text").write_text("item_id:token\ttext:token_seq\n" + "".join(f"{i}\t{t}\n" for i, t in zip(ds.item_ids, ds.item_texts)), encoding="utf-8")
    (folder / f"{name}.item2index").write_text("".join(f"{i}\t{k}\n" for k, i in enumerate(ds.item_ids)), encoding="utf-8")
    (folder / f"{name}.user2index").write_text("".join(f"{u}\t{k}\n" for k, u in enumerate(ds.user_ids)), encoding="utf-8")

