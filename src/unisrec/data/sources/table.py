"""Any interactions table + item table (CSV, TSV or Parquet, chosen by extension) -> Dataset.

For users with their own data: interactions need a user, an item and a time column (unix seconds or
a date-time); the item table an item id and one or more text columns. Each text column is cleaned
like an Amazon field (docs/protocol.md "Item text"; without the release's 2,000-character limit, so long texts
are kept whole and the encoder truncates them) and the columns are joined with a space. Interactions whose
item has no row in the item table are dropped (``no_item_text``); then the same protocol as Amazon:
exact duplicates (user, item, time) removed, k-core, time order, leave-one-out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from unisrec.data.build import Interactions, PrepareOptions, encode, finish_prepare, preparing
from unisrec.data.cleaning import clean_field, is_empty_text
from unisrec.data.dataset import Dataset
from unisrec.data.records import BadRecords
from unisrec.data.tables import Column, RawTable, read_any_table


def prepare_table(
    interactions: str | Path,
    items: str | Path,
    output: str | Path | None = None,
    *,
    user_col: str = "user_id",
    item_col: str = "item_id",
    time_col: str = "timestamp",
    item_id_col: str = "item_id",
    text_cols: tuple[str, ...] = ("text",),
    options: PrepareOptions | None = None,
    **option_values: Any,
) -> Dataset:
    """Prepare a generic interactions table + item table (see module docstring).

    Keyword arguments other than the column names are :class:`PrepareOptions` fields."""
    opts = PrepareOptions.build(output, options, **option_values)
    interactions, items = Path(interactions), Path(items)
    inputs = {"interactions": interactions, "items": items}
    with preparing(opts, inputs):
        bad = BadRecords(opts.on_bad_lines)
        inter = read_any_table(interactions, [Column(user_col, option="--user-col"), Column(item_col, option="--item-col"),
                                              Column(time_col, "time", option="--time-col")], bad)
        item_tab = read_any_table(items, [Column(item_id_col, option="--item-id-col")]
                                  + [Column(c, required=False, option="--text-cols") for c in text_cols], bad)
        users, user_values = encode(inter.columns[user_col])
        item_codes, item_values = encode(inter.columns[item_col])
        texts = _item_texts(item_tab, item_values, item_id_col, text_cols, bad)
        allowed = np.zeros(len(item_values), dtype=bool)
        allowed[list(texts)] = True
        data = Interactions(users, item_codes, inter.columns[time_col], user_values, item_values,
                            lambda codes: [texts[int(c)] for c in codes], inter.where,
                            dedup_keys={"time": inter.columns[time_col]}, item_allowed=allowed,
                            item_drop_reason="no_item_text")
        return finish_prepare(data, bad, opts, source="table", inputs=inputs, default_name=interactions.stem,
                              options={"user_col": user_col, "item_col": item_col, "time_col": time_col,
                                       "item_id_col": item_id_col, "text_cols": list(text_cols)})


def _item_texts(item_tab: RawTable, item_values: pa.Array, item_id_col: str, text_cols: tuple[str, ...],
                bad: BadRecords) -> dict[int, str]:
    """Text of every interaction item code that has a row (the first row of an id wins; later ones
    are counted as ``duplicate_item_row``) with a non-empty text."""
    ids = item_tab.columns[item_id_col]
    pos = pc.index_in(item_values, value_set=ids)  # first matching row of each interaction item
    _, first = np.unique(encode(ids)[0], return_index=True)
    bad.drop("duplicate_item_row", len(ids) - len(first))
    columns = [item_tab.columns[c].to_pylist() for c in text_cols]
    has_row = ~pos.is_null().to_numpy(zero_copy_only=False)
    pos_np = pc.fill_null(pos, 0).to_numpy(zero_copy_only=False)
    texts: dict[int, str] = {}
    for code in np.flatnonzero(has_row):
        row = int(pos_np[code])
        text = " ".join(clean_field(col[row], max_chars=None) for col in columns if col[row])
        if is_empty_text(text):
            bad.bad("empty_text", item_tab.where(row), f"item {ids[row].as_py()!r} has an empty text in {', '.join(text_cols)}")
            continue
        texts[int(code)] = text
    return texts
