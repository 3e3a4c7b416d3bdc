"""Amazon Reviews "ratings only" CSV + ``meta_<Category>.json.gz`` -> Dataset (docs/protocol.md "Data protocol").

Ratings: no header, columns ``item,user,rating,timestamp`` (2018; the 2014 files are
``user,item,rating,timestamp``: pass ``ratings_columns``). Meta: one record per line, JSON (2018) or
a Python literal (2014, read with ``ast.literal_eval`` only when JSON parsing fails). Item text =
cleaned title + category + brand (docs/protocol.md "Item text"; the 2014 ``categories`` list of lists stands in
for ``category``). Items without a meta record are dropped, then the (5, 5)-core, then time order.
A repeated (user, item, rating, timestamp) row is a duplicate, as in the release (which stored the
ratings in a set).
"""

from __future__ import annotations

import ast
import gzip
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from unisrec.data.build import Interactions, PrepareOptions, encode, finish_prepare, preparing
from unisrec.data.cleaning import AMAZON_TEXT_FIELDS, amazon_item_text, is_empty_text
from unisrec.data.dataset import Dataset
from unisrec.data.records import BadRecords, InputError
from unisrec.data.tables import Column, check_file, read_csv_table

RATINGS_COLUMNS = ("item", "user", "rating", "timestamp")
_KINDS = {"item": "str", "user": "str", "rating": "float", "timestamp": "time"}


def iter_meta_lines(path: Path, block: int = 1 << 24):
    """(line number, bytes) of every non-blank line of a plain or gzipped file, read in big blocks."""
    from tqdm import tqdm

    opener = gzip.open if path.suffix == ".gz" else open
    line_no = 0
    rest = b""
    try:
        # progress in input bytes read (compressed bytes for .gz); shown on a terminal only
        with opener(path, "rb") as fh, tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                                            desc=f"meta {path.name}", disable=None, leave=False) as bar:
            raw = fh.fileobj if hasattr(fh, "fileobj") else fh
            while True:
                chunk = fh.read(block)
                if not chunk:
                    break
                bar.update(raw.tell() - bar.n)
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                for line in lines:
                    line_no += 1
                    if line.strip():
                        yield line_no, line
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        raise InputError(f"{path}: truncated or corrupt compressed file after line {line_no} ({exc})") from None
    if rest.strip():
        yield line_no + 1, rest


def parse_meta_line(line: bytes):
    """JSON first (fast, orjson); a Python literal (the 2014 files) only if that fails; None if neither."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(line.decode("utf-8"))
    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError):
        return None


def read_meta(path: Path, wanted: set[str], bad: BadRecords, fields=AMAZON_TEXT_FIELDS) -> tuple[dict[str, str], int, int]:
    """Text of every item in ``wanted`` that has a meta record (first record wins), the number of
    meta records read, and how many texts kept fields of 2,000+ characters. Records of other items
    are only parsed for their ``asin``.

    The release empties a field of 2,000+ characters; an item whose text holds nothing else keeps
    its long fields instead of being reported as having no text (the encoder truncates them)."""
    texts: dict[str, str] = {}
    n_records = n_long = 0
    for line_no, line in iter_meta_lines(path):
        record = parse_meta_line(line)
        if not isinstance(record, dict):
            bad.bad("invalid_json", f"{path}, line {line_no}", f"not a JSON object or Python literal: {line[:60]!r}")
            continue
        asin = record.get("asin")
        if not isinstance(asin, str) or not asin:
            bad.bad("missing_value", f"{path}, line {line_no}", "meta record without an 'asin'")
            continue
        n_records += 1
        if asin not in wanted:
            continue
        if asin in texts:
            bad.drop("duplicate_meta", 1)
            continue
        if "category" not in record and isinstance(record.get("categories"), list):  # 2014 layout
            record["category"] = [c for group in record["categories"] for c in (group if isinstance(group, list) else [group])]
        text = amazon_item_text(record, fields)
        if is_empty_text(text) and not is_empty_text(long := amazon_item_text(record, fields, max_chars=None)):
            text, n_long = long, n_long + 1
        if is_empty_text(text):
            bad.bad("empty_text", f"{path}, line {line_no}", f"item {asin} has no title/category/brand text")
            continue
        texts[asin] = text
    if n_records == 0:
        raise InputError(f"{path}: no meta records found")
    return texts, n_records, n_long


def prepare_amazon(
    ratings: str | Path,
    meta: str | Path,
    output: str | Path | None = None,
    *,
    ratings_columns: tuple[str, ...] = RATINGS_COLUMNS,
    options: PrepareOptions | None = None,
    **option_values: Any,
) -> Dataset:
    """Prepare one Amazon category (see module docstring); saves to ``output`` if given.

    Keyword arguments (``name``, ``min_user``, ``min_item``, ``max_history``, ``on_bad_lines``,
    ``duplicates``, ``ties``, ``tie_seed``, ``force``) are :class:`PrepareOptions` fields."""
    opts = PrepareOptions.build(output, options, **option_values)
    ratings, meta = Path(ratings), Path(meta)
    inputs = {"ratings": ratings, "meta": meta}
    with preparing(opts, inputs):
        check_file(meta, "--meta")
        if sorted(ratings_columns) != sorted(RATINGS_COLUMNS):
            raise InputError(f"--ratings-columns must name {', '.join(RATINGS_COLUMNS)} once each, got {', '.join(ratings_columns)}")
        bad = BadRecords(opts.on_bad_lines)
        table = read_csv_table(check_file(ratings, "--ratings"), [Column(c, _KINDS[c]) for c in RATINGS_COLUMNS], bad,
                               names=list(ratings_columns), delimiter=",")
        cols = table.columns
        users, user_values = encode(cols["user"])
        items, item_values = encode(cols["item"])
        texts, n_meta, n_long = read_meta(meta, set(item_values.to_pylist()), bad)
        has_meta = np.fromiter((iid in texts for iid in item_values.to_pylist()), dtype=bool, count=len(item_values))

        def item_texts(codes: np.ndarray) -> list[str]:
            return [texts[iid] for iid in item_values.take(pa.array(codes)).to_pylist()]

        inter = Interactions(users, items, cols["timestamp"], user_values, item_values, item_texts, table.where,
                             dedup_keys={"rating": cols["rating"], "timestamp": cols["timestamp"]},
                             item_allowed=has_meta, item_drop_reason="no_meta")
        return finish_prepare(inter, bad, opts, source="amazon", inputs=inputs, default_name=ratings.stem,
                              options={"ratings_columns": list(ratings_columns)},
                              manifest={"meta_records": n_meta, "text_fields": list(AMAZON_TEXT_FIELDS),
                                        "long_field_texts_kept": n_long})
