"""UCI "Online Retail" (.xlsx from UCI, latin-1 .csv from Kaggle, or .parquet) -> Dataset.

The paper's protocol (docs/protocol.md "Data protocol"): each invoice is a user (a session), StockCode is the item,
its Description (lower-cased, + ".") the item text; rows without a description are dropped; exact
duplicates are removed; 5-core on invoices and items; order by InvoiceDate; leave-one-out.

Details that reproduce Table 2 exactly (16,520 users, 3,469 items, 519,906 interactions) -- they
are the release's (``process_or.py``): a duplicate is a repeated (InvoiceNo, StockCode, Quantity,
InvoiceDate); cancellations ("C" invoices) are kept. A missing Description is an empty cell or the
placeholder "Unknown" (the shared parquet copy filled its 1,454 gaps with it). An item's text is
the first Description of its StockCode in file order that holds a word character; the release
takes the first one outright, which gives texts such as "?." (counts are the same either way).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from unisrec.data.build import Interactions, PrepareOptions, encode, finish_prepare, preparing
from unisrec.data.cleaning import online_retail_text
from unisrec.data.dataset import Dataset
from unisrec.data.records import BadRecords, InputError
from unisrec.data.tables import Column, RawTable, check_encoding, check_file, read_bytes, read_csv_table, read_parquet_table, table_format

COLUMNS = [
    Column("InvoiceNo"),
    Column("StockCode"),
    Column("Description", required=False),
    Column("Quantity", "float"),
    Column("InvoiceDate", "time"),
]
MISSING_DESCRIPTIONS = ("", "Unknown")


def read_online_retail(path: Path, bad: BadRecords, encoding: str = "auto") -> RawTable:
    path = check_file(Path(path), "--input")
    fmt = table_format(path)
    if fmt == "parquet":
        return read_parquet_table(path, COLUMNS, bad)
    if fmt == "xlsx":
        return _read_xlsx(path, bad)
    if encoding == "auto":
        encoding = _guess_encoding(path)
    return read_csv_table(path, COLUMNS, bad, encoding=check_encoding(encoding))


def _guess_encoding(path: Path) -> str:
    """UTF-8 if the whole file decodes as UTF-8, else latin-1 (Kaggle's ``data.csv``)."""
    data = read_bytes(path)
    try:
        data.decode("utf-8")
        return "utf8"
    except UnicodeDecodeError:
        return "latin-1"


def _read_xlsx(path: Path, bad: BadRecords) -> RawTable:
    """The UCI sheet via openpyxl (read-only, streaming). openpyxl yields Python objects per row,
    so this path is a per-row loop; it exists for users who hold only the .xlsx."""
    try:
        import openpyxl
    except ImportError as exc:  # pragma: no cover - openpyxl is a dependency
        raise InputError("reading .xlsx needs openpyxl: pip install openpyxl") from exc
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many types for a corrupt/non-xlsx file
        raise InputError(f"{path}: not a readable .xlsx workbook ({exc})") from None
    sheet = book.worksheets[0]
    rows = sheet.iter_rows(values_only=True)
    header = [str(h).strip() if h is not None else "" for h in next(rows, ())]
    missing = [c.name for c in COLUMNS if c.name not in header]
    if missing:
        raise InputError(f"{path}, sheet {sheet.title!r}, row 1: missing column(s) {', '.join(missing)}; the header has: {', '.join(header)}")
    pos = [header.index(c.name) for c in COLUMNS]
    cols: list[list] = [[] for _ in COLUMNS]
    from tqdm import tqdm

    for values in tqdm(rows, total=max((sheet.max_row or 1) - 1, 0), unit=" rows", desc=path.name, disable=None, leave=False):
        for out, p in zip(cols, pos):
            out.append(values[p] if p < len(values) else None)
    book.close()

    def text(values):
        return pa.array(["" if v is None else (str(v) if not isinstance(v, float) or not v.is_integer() else str(int(v))) for v in values], pa.string())

    raw = {
        "InvoiceNo": text(cols[0]),
        "StockCode": text(cols[1]),
        "Description": text(cols[2]),
        "Quantity": pa.array([str(v) if v is not None else "" for v in cols[3]], pa.string()),
        "InvoiceDate": pa.array(cols[4]) if all(hasattr(v, "year") for v in cols[4]) else pa.array([str(v) if v is not None else "" for v in cols[4]]),
    }
    from unisrec.data.tables import convert_columns

    return convert_columns(path, raw, COLUMNS, bad, None)


def prepare_online_retail(
    input: str | Path,
    output: str | Path | None = None,
    *,
    encoding: str = "auto",
    options: PrepareOptions | None = None,
    **option_values: Any,
) -> Dataset:
    """Prepare the Online Retail data (see module docstring); saves to ``output`` if given.

    Keyword arguments other than ``encoding`` are :class:`PrepareOptions` fields."""
    opts = PrepareOptions.build(output, options, **option_values)
    inputs = {"input": Path(input)}
    with preparing(opts, inputs):
        bad = BadRecords(opts.on_bad_lines)
        table = read_online_retail(Path(input), bad, encoding)
        cols = table.columns
        desc = pc.utf8_trim_whitespace(cols["Description"])
        has_desc = ~pc.is_in(desc, value_set=pa.array(MISSING_DESCRIPTIONS)).to_numpy(zero_copy_only=False)
        bad.drop("missing_description", int((~has_desc).sum()))
        kept = np.flatnonzero(has_desc)
        take = pa.array(kept)
        users, user_values = encode(cols["InvoiceNo"].take(take))
        items, item_values = encode(cols["StockCode"].take(take))
        first_row, descriptions = _text_rows(items, cols["Description"].take(take))

        def item_texts(codes: np.ndarray) -> list[str]:
            return [online_retail_text(d) for d in descriptions.take(pa.array(first_row[codes])).to_pylist()]

        inter = Interactions(users, items, cols["InvoiceDate"][kept], user_values, item_values, item_texts,
                             lambda k: table.where(int(kept[k])),
                             dedup_keys={"Quantity": cols["Quantity"][kept], "InvoiceDate": cols["InvoiceDate"][kept]})
        return finish_prepare(
            inter, bad, opts, source="online-retail", inputs=inputs, default_name="online_retail",
            options={"encoding": encoding},
            manifest={"protocol": "invoice = user, StockCode = item, text = lower-cased Description + '.'; "
                                  "duplicates = same (InvoiceNo, StockCode, Quantity, InvoiceDate)"},
        )


def _text_rows(items: np.ndarray, descriptions: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Row of each item code's text: its first description in file order that holds a word (the
    release takes the first one outright, which gives texts like "?." for items whose first row is a
    stock note), else its first description."""
    wordy = pc.match_substring_regex(descriptions, r"\w").to_numpy(zero_copy_only=False)
    _, first_any = np.unique(items, return_index=True)
    wordy_rows = np.flatnonzero(wordy)
    codes_w, first_w = np.unique(items[wordy_rows], return_index=True)
    first_row = first_any.copy()
    first_row[codes_w] = wordy_rows[first_w]
    return first_row, descriptions
