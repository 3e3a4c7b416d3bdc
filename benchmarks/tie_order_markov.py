"""How much sequential signal does the tie order carry? A first-order Markov check (no training).

For each dataset dir: count item -> next-item transitions in every user's training part, then rank
all items for each test example by the count of (last history item -> item) and report Recall@10
and NDCG@10 (ties in count broken by popularity, then pessimistically like the evaluator).
Also: the share of consecutive pairs in the training parts whose item codes (StockCode) are
adjacent in sorted code order ("catalogue order").

    python benchmarks/tie_order_markov.py data/online_retail data/online_retail_shuffled \
        --out results/online_retail/tie_order_markov.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import benchlib

from unisrec.data.dataset import Dataset  # noqa: E402
from unisrec.evaluation.metrics import metrics_from_ranks  # noqa: E402


def check(path: str) -> dict:
    ds = Dataset.load(path)
    n = ds.num_items + 1
    off, items = ds.seq_offsets, ds.seq_items.astype(np.int64)
    lens = np.diff(off)
    # training part of each user: all but the last two items
    pos = np.arange(len(items)) - np.repeat(off[:-1], lens)
    in_train = pos < np.repeat(lens - 2, lens)
    nxt_ok = in_train[:-1] & in_train[1:] & (np.repeat(np.arange(len(lens)), lens)[:-1] == np.repeat(np.arange(len(lens)), lens)[1:])
    src, dst = items[:-1][nxt_ok], items[1:][nxt_ok]
    trans = np.zeros((n, n), dtype=np.float64)
    np.add.at(trans, (src, dst), 1.0)
    pop = np.bincount(items[in_train], minlength=n).astype(np.float64)
    hist, hl, tgt = ds.examples("test", 50)
    last = hist[np.arange(len(hl)), hl - 1]
    scores = trans[last] + pop[None, :] / (pop.max() + 1.0)  # popularity only breaks count ties
    scores[:, 0] = -np.inf
    s_t = scores[np.arange(len(tgt)), tgt]
    ranks = (scores >= s_t[:, None]).sum(1)  # pessimistic: ties rank above the target
    m = metrics_from_ranks(ranks, [10])
    code_rank = np.empty(n, dtype=np.int64)
    order = np.argsort(np.array([str(x) for x in ds.item_ids]), kind="stable") + 1
    code_rank[order] = np.arange(1, n)
    adjacent = float(np.mean(np.abs(code_rank[src] - code_rank[dst]) <= 1))
    return {"dataset": benchlib.display_path(path), "order": ds.manifest.get("split", {}).get("order"), "markov_test": m,
            "train_pairs": int(nxt_ok.sum()), "pairs_with_adjacent_item_codes": round(adjacent, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", nargs="+", help="prepared dataset dirs (e.g. one per tie order)")
    ap.add_argument("--out", type=Path, default=None, help="also write the rows to this JSON file")
    args = ap.parse_args()
    text = json.dumps([check(p) for p in args.datasets], indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
