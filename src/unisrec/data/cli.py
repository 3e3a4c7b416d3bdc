"""`unisrec prepare {amazon,online-retail,atomic,table}`, `unisrec stats`, `unisrec export-atomic`.

Handlers import only numpy/pyarrow (never torch): preparing data stays a few-second job.
"""

from __future__ import annotations

import argparse
import json
import time

from unisrec.data.dataset import DEFAULT_MAX_HISTORY
from unisrec.data.sequences import TIE_ORDERS

EPILOG_PREPARE = """\
examples:
  unisrec prepare amazon --ratings Industrial_and_Scientific.csv --meta meta_Industrial_and_Scientific.json.gz --output data/scientific
  unisrec prepare online-retail --input "Online Retail.xlsx" --output data/or
  unisrec prepare atomic --input path/to/Scientific --output data/scientific
  unisrec prepare table --interactions clicks.parquet --items products.csv --text-cols title brand --output data/mine

Every dropped record is counted by reason in DIR/manifest.json ("dropped"). Bad input lines stop the
run with file + line + problem, unless --on-bad-lines skip (then they are counted as bad_line:KIND)."""


def _common(p: argparse.ArgumentParser, kcore: bool = True) -> None:
    p.add_argument("--output", "-o", required=True, metavar="DIR",
                   help="dataset directory to write: new, empty, or a unisrec dataset (replaced atomically)")
    p.add_argument("--force", action="store_true",
                   help="also write into an existing non-empty folder that is not a unisrec dataset (its files are kept)")
    p.add_argument("--name", help="dataset name recorded in the manifest (default: the output folder's name)")
    p.add_argument("--max-history", type=int, default=DEFAULT_MAX_HISTORY, metavar="N",
                   help="history window recorded for the split (default %(default)s, the paper's)")
    p.add_argument("--on-bad-lines", choices=("error", "skip"), default="error",
                   help="error (default): stop at the first bad input line; skip: drop and count bad lines by reason")
    if kcore:
        p.add_argument("--min-user", type=int, default=5, metavar="K", help="k-core: interactions per user (default %(default)s)")
        p.add_argument("--min-item", type=int, default=5, metavar="K", help="k-core: interactions per item (default %(default)s)")
        p.add_argument("--duplicates", choices=("drop", "error"), default="drop",
                       help="identical records: drop all but the first and count them (default, the paper's protocol) or stop")
        p.add_argument("--ties", choices=TIE_ORDERS, default="input-order",
                       help="order of a user's items with the same time: input-order (default, deterministic) or shuffle "
                            "(seeded random order, like the authors' release; Online Retail invoices share one time)")
        p.add_argument("--tie-seed", type=int, default=0, metavar="S", help="seed of --ties shuffle (default %(default)s)")


def register(subparsers) -> None:
    prep = subparsers.add_parser("prepare", help="raw logs + item text -> a dataset directory",
                                 description="Turn raw interaction logs and item metadata into one dataset directory "
                                             "(item table with text, ordered user sequences, leave-one-out split, manifest).",
                                 epilog=EPILOG_PREPARE, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = prep.add_subparsers(dest="source", metavar="SOURCE", required=True)

    p = src.add_parser("amazon", help="Amazon Reviews ratings CSV + meta_<Category>.json.gz (2018 or 2014)")
    p.add_argument("--ratings", required=True, metavar="FILE", help="ratings-only CSV without header: item,user,rating,timestamp")
    p.add_argument("--meta", required=True, metavar="FILE", help="meta_<Category>.json(.gz): one JSON object (or 2014 Python literal) per line")
    p.add_argument("--ratings-columns", default="item,user,rating,timestamp", metavar="COLS",
                   help="column order of the ratings CSV (2014 files: user,item,rating,timestamp)")
    _common(p)
    p.set_defaults(func=_prepare_amazon)

    p = src.add_parser("online-retail", help="UCI Online Retail (.xlsx, latin-1 .csv or .parquet), invoice = user")
    p.add_argument("--input", required=True, metavar="FILE", help="Online Retail.xlsx, data.csv or a .parquet copy")
    p.add_argument("--encoding", default="auto", help="CSV text encoding (default auto: UTF-8 if valid, else latin-1)")
    _common(p)
    p.set_defaults(func=_prepare_online_retail)

    p = src.add_parser("atomic", help="RecBole/UniSRec atomic files (X.*.inter, X.text or X.item, X.item2index), split kept")
    p.add_argument("--input", required=True, metavar="DIR", help="folder holding the atomic files")
    p.add_argument("--stem", help="file-name stem X when the folder holds several datasets")
    _common(p, kcore=False)
    p.set_defaults(func=_prepare_atomic)

    p = src.add_parser("table", help="your own interactions table + item table (CSV/TSV/Parquet)")
    p.add_argument("--interactions", required=True, metavar="FILE", help="one row per interaction (.csv, .tsv, .parquet)")
    p.add_argument("--items", required=True, metavar="FILE", help="one row per item: id + text column(s)")
    p.add_argument("--user-col", default="user_id", help="user column of the interactions (default %(default)s)")
    p.add_argument("--item-col", default="item_id", help="item column of the interactions (default %(default)s)")
    p.add_argument("--time-col", default="timestamp", help="time column: unix seconds or date-time (default %(default)s)")
    p.add_argument("--item-id-col", default="item_id", help="item id column of the item table (default %(default)s)")
    p.add_argument("--text-cols", nargs="+", default=["text"], metavar="COL", help="text column(s) of the item table (default text)")
    _common(p)
    p.set_defaults(func=_prepare_table)

    p = subparsers.add_parser("stats", help="dataset statistics (the paper's Table 2 columns)")
    p.add_argument("dataset", metavar="DIR")
    p.add_argument("--json", action="store_true", help="print one JSON object (users, items, interactions, avg_seq_len, avg_text_words)")
    p.set_defaults(func=_stats)

    p = subparsers.add_parser("export-atomic", help="write RecBole atomic files of a dataset (cross-checks with RecBole)")
    p.add_argument("dataset", metavar="DIR")
    p.add_argument("output", metavar="OUT", help="folder to write NAME.{train,valid,test}.inter, NAME.text, NAME.item2index, NAME.user2index")
    p.add_argument("--name", help="file-name stem NAME (default: the dataset's name)")
    p.add_argument("--max-history", type=int, default=DEFAULT_MAX_HISTORY, metavar="N", help="history cap (default %(default)s)")
    p.set_defaults(func=_export_atomic)


def _options(args):
    """The options every source shares, built once from the common flags."""
    from unisrec.data.build import PrepareOptions

    values = {k: getattr(args, k) for k in ("name", "max_history", "on_bad_lines", "force", "min_user", "min_item",
                                             "duplicates", "ties", "tie_seed") if hasattr(args, k)}
    return PrepareOptions.build(args.output, **values)


def _summary(ds, started: float) -> int:
    from unisrec.data.stats import dataset_stats

    s = dataset_stats(ds)
    print(f"wrote {ds.path}: {s['users']:,} users, {s['items']:,} items, {s['interactions']:,} interactions "
          f"(avg sequence {s['avg_seq_len']:.2f}, avg text {s['avg_text_words']:.1f} words) in {time.perf_counter() - started:.1f}s")
    dropped = ds.manifest.get("dropped", {})
    if dropped:
        print("dropped: " + ", ".join(f"{k} {v:,}" for k, v in dropped.items()))
    kept, gone = ds.manifest.get("features", {}), ds.manifest.get("features_dropped")
    if kept:
        print(f"kept feature sets (item table unchanged): {', '.join(sorted(kept))}")
    if gone:
        print(f"dropped feature sets {', '.join(gone['sets'])}: {gone['reason']}")
    return 0


def _prepare_amazon(args) -> int:
    from unisrec.data.sources.amazon import prepare_amazon

    t0 = time.perf_counter()
    cols = tuple(c.strip() for c in args.ratings_columns.split(","))
    return _summary(prepare_amazon(args.ratings, args.meta, ratings_columns=cols, options=_options(args)), t0)


def _prepare_online_retail(args) -> int:
    from unisrec.data.sources.online_retail import prepare_online_retail

    t0 = time.perf_counter()
    return _summary(prepare_online_retail(args.input, encoding=args.encoding, options=_options(args)), t0)


def _prepare_atomic(args) -> int:
    from unisrec.data.sources.atomic import prepare_atomic

    t0 = time.perf_counter()
    return _summary(prepare_atomic(args.input, stem=args.stem, options=_options(args)), t0)


def _prepare_table(args) -> int:
    from unisrec.data.sources.table import prepare_table

    t0 = time.perf_counter()
    ds = prepare_table(args.interactions, args.items, user_col=args.user_col, item_col=args.item_col,
                       time_col=args.time_col, item_id_col=args.item_id_col, text_cols=tuple(args.text_cols),
                       options=_options(args))
    return _summary(ds, t0)


def _stats(args) -> int:
    from unisrec.data.stats import dataset_stats

    s = dataset_stats(args.dataset)
    if args.json:
        print(json.dumps(s))
    else:
        print(f"{'dataset':<12} {'#users':>10} {'#items':>10} {'#inters':>12} {'avg len':>8} {'avg words':>10}")
        print(f"{str(args.dataset):<12} {s['users']:>10,} {s['items']:>10,} {s['interactions']:>12,} "
              f"{s['avg_seq_len']:>8.2f} {s['avg_text_words']:>10.2f}")
    return 0


def _export_atomic(args) -> int:
    from unisrec.data.export import export_atomic

    out = export_atomic(args.dataset, args.output, name=args.name, max_history=args.max_history)
    print(f"wrote atomic files to {out}")
    return 0
