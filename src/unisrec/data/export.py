"""Dataset -> RecBole atomic files (the layout of the UniSRec release), for cross-checks with RecBole.

Writes ``NAME.train.inter``, ``NAME.valid.inter``, ``NAME.test.inter`` (user index, space-separated
history of 0-based item indices oldest first, capped at ``max_history``, target), ``NAME.text``
(raw item id, text), ``NAME.item2index`` and ``NAME.user2index`` (raw id, 0-based index). Item
index k in the files is our item k+1. Train rows are written per user from the longest prefix down,
as the release does, so ``prepare atomic`` on a release folder followed by ``export-atomic`` gives
back its .inter files byte for byte.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from unisrec.errors import UserError
from unisrec.data.dataset import DEFAULT_MAX_HISTORY, Dataset

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
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    try:
        for split in ("train", "valid", "test"):
            (tmp / f"{name}.{split}.inter").write_bytes(_inter_lines(ds, split, max_history))
        for item_id, text in zip(ds.item_ids, ds.item_texts):
            if "\t" in text or "\n" in text:
                raise UserError(f"{ds.path or ds.name}: the text of item {item_id!r} holds a tab or newline, "
                                "which RecBole atomic files cannot represent")
        (tmp / f"{name}.text").write_text("item_id:token\ttext:token_seq\n" + "".join(f"{i}\t{t}\n" for i, t in zip(ds.item_ids, ds.item_texts)), encoding="utf-8")
        (tmp / f"{name}.item2index").write_text("".join(f"{i}\t{k}\n" for k, i in enumerate(ds.item_ids)), encoding="utf-8")
        (tmp / f"{name}.user2index").write_text("".join(f"{u}\t{k}\n" for k, u in enumerate(ds.user_ids)), encoding="utf-8")
        if output.exists():
            shutil.rmtree(output)
        os.rename(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return output
