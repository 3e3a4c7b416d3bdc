"""Table 2's columns for one dataset directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unisrec.data.dataset import Dataset


def dataset_stats(dataset: Dataset | str | Path) -> dict:
    """#users, #items, #interactions, average sequence length, average item-text length in words."""
    ds = dataset if isinstance(dataset, Dataset) else Dataset.load(dataset)
    words = np.fromiter((len(t.split()) for t in ds.item_texts), dtype=np.int64, count=ds.num_items)
    return {
        "users": ds.num_users,
        "items": ds.num_items,
        "interactions": ds.num_interactions,
        "avg_seq_len": round(ds.num_interactions / max(ds.num_users, 1), 4),
        "avg_text_words": round(float(words.mean()) if len(words) else 0.0, 4),
    }
