"""Any interactions table + item table (CSV, TSV or Parquet, chosen by extension) -> Dataset.

For users with their own data: interactions need a user, an item and a time column (unix seconds or
a date-time); the item table an item id and one or more text columns. Each text column is cleaned
like an Amazon field (SPEC "Item text") and the columns are joined with a space. Interactions whose
item has no row in the item table are dropped (``no_item_text``); then the same protocol as Amazon:
exact duplicates (user, item, time) removed, k-core, time order, leave-one-out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from unisrec.data.build import assemble_dataset, describe_inputs, encode
from unisrec.data.cleaning import clean_field, is_empty_text
from unisrec.data.dataset import DEFAULT_MAX_HISTORY, Dataset
from unisrec.data.records import BadRecords
from unisrec.data.tables import Column, read_any_table


def prepare_table(
    interactions: str | Path,
    items: str | Path,
    output: str | Path | None = None,
    *,
    name: str | None = None,
    user_col: str = "user_id",
    item_col: str = "item_id",
    time_col: str = "timestamp",
    item_id_col: str = "item_id",
    text_cols: tuple[str, ...] = ("text",),
    min_user: int = 5,
    min_item: int = 5,
    max_history: int = DEFAULT_MAX_HISTORY,
    on_bad_lines: str = "error",
    duplicates: str = "drop",
    ties: str = "input-order",
    tie_seed: int = 0,
) -> Dataset:
    """Prepare a generic interactions table + item table (see module docstring)."""
    interactions, items = Path(interactions), Path(items)
    bad = BadRecords(on_bad_lines)
    inter = read_any_table(interactions, [Column(user_col, option="--user-col"), Column(item_col, option="--item-col"),
                                          Column(time_col, "time", option="--time-col")], bad)
    item_tab = read_any_table(items, [Column(item_id_col, option="--item-id-col")]
                              + [Column(c, required=False, option="--text-cols") for c in text_cols], bad)
    users, user_values = encode(inter.columns[user_col])
    item_codes, item_values = encode(inter.columns[item_col])

    # item table: first row of each id wins; later ones are counted as duplicates
    ids = item_tab.columns[item_id_col]
    pos = pc.index_in(item_values, value_set=ids)  # first matching row of each interaction item
    texts: dict[int, str] = {}
    _, first = np.unique(encode(ids)[0], return_index=True)
    bad.drop("duplicate_item_row", len(ids) - len(first))
    columns = [item_tab.columns[c].to_pylist() for c in text_cols]
    has_row = ~pos.is_null().to_numpy(zero_copy_only=False)
    pos_np = pc.fill_null(pos, 0).to_numpy(zero_copy_only=False)
    allowed = np.zeros(len(item_values), dtype=bool)
    for code in np.flatnonzero(has_row):
        row = int(pos_np[code])
        text = " ".join(clean_field(col[row]) for col in columns if col[row])
        if is_empty_text(text):
            bad.bad("empty_text", item_tab.where(row), f"item {ids[row].as_py()!r} has an empty text in {', '.join(text_cols)}")
            continue
        texts[int(code)] = text
        allowed[code] = True

    ds = assemble_dataset(
        name=name or (Path(output).name if output else interactions.stem),
        users=users,
        items=item_codes,
        times=inter.columns[time_col],
        user_values=user_values,
        item_values=item_values,
        item_texts=lambda codes: [texts[int(c)] for c in codes],
        bad=bad,
        where=inter.where,
        dedup_keys={"time": inter.columns[time_col]},
        duplicates=duplicates,
        ties=ties,
        tie_seed=tie_seed,
        item_allowed=allowed,
        item_drop_reason="no_item_text",
        min_user=min_user,
        min_item=min_item,
        max_history=max_history,
        manifest={
            "source": "table",
            "inputs": describe_inputs(interactions=interactions, items=items),
            "options": {"min_user": min_user, "min_item": min_item, "max_history": max_history,
                        "on_bad_lines": on_bad_lines, "duplicates": duplicates, "user_col": user_col,
                        "item_col": item_col, "time_col": time_col, "item_id_col": item_id_col,
                        "text_cols": list(text_cols)},
        },
    )
    if output is not None:
        ds.save(output)
    return ds
