"""Online Retail as the user holds it: Kaggle's latin-1 data.csv and UCI's .xlsx give the same
dataset as the parquet copy (built here from the first rows of the shared parquet)."""

import csv
from pathlib import Path

import numpy as np
import pytest

from unisrec.data import prepare_online_retail

PARQUET = Path(__file__).resolve().parents[2] / "shared" / "data" / "online_retail" / "online_retail.parquet"
pytestmark = pytest.mark.skipif(not PARQUET.is_file(), reason=f"{PARQUET} not present (CI has ../shared beside the clone)")
N_ROWS = 4000
HEADER = ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country"]


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    import pyarrow.parquet as pq

    table = pq.read_table(PARQUET).slice(0, N_ROWS)
    out = tmp_path_factory.mktemp("or")
    pq.write_table(table, out / "head.parquet")
    recs = table.to_pylist()
    for r in recs:  # the originals have an empty cell where the shared copy says "Unknown"
        if r["Description"] == "Unknown":
            r["Description"] = None
    assert recs[0]["StockCode"] == "85123A"
    recs[0]["Description"] = "CAFÉ CRÈME HOLDER"  # latin-1 characters, as in Kaggle's file
    return out, recs


def test_latin1_csv_and_xlsx_match_parquet(rows):
    out, recs = rows
    with open(out / "data.csv", "w", newline="", encoding="latin-1") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        for r in recs:
            d = r["InvoiceDate"]
            w.writerow([r["InvoiceNo"], r["StockCode"], r["Description"] or "", r["Quantity"],
                        f"{d.month}/{d.day}/{d.year} {d.hour}:{d.minute:02d}", r["UnitPrice"],
                        "" if r["CustomerID"] is None else int(r["CustomerID"]), r["Country"]])
    import openpyxl

    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet("Online Retail")
    sheet.append(HEADER)
    for r in recs:  # UCI's sheet stores numeric-looking codes as numbers
        code = int(r["StockCode"]) if r["StockCode"].isdigit() else r["StockCode"]
        inv = int(r["InvoiceNo"]) if r["InvoiceNo"].isdigit() else r["InvoiceNo"]
        sheet.append([inv, code, r["Description"], r["Quantity"], r["InvoiceDate"], r["UnitPrice"], r["CustomerID"], r["Country"]])
    book.save(out / "Online Retail.xlsx")

    ref = prepare_online_retail(out / "head.parquet", min_user=2, min_item=2)
    from_csv = prepare_online_retail(out / "data.csv", min_user=2, min_item=2)
    from_xlsx = prepare_online_retail(out / "Online Retail.xlsx", min_user=2, min_item=2)
    assert ref.num_interactions > 1000
    for other in (from_csv, from_xlsx):
        assert other.user_ids == ref.user_ids and other.item_ids == ref.item_ids
        assert np.array_equal(other.seq_items, ref.seq_items) and np.array_equal(other.seq_offsets, ref.seq_offsets)
        assert other.manifest["dropped"] == ref.manifest["dropped"]
        assert other.item_texts[1:] == ref.item_texts[1:]
    # the latin-1 text came through decoded, not as mojibake; 85123A is the first item
    assert ref.item_ids[0] == "85123A" and ref.item_texts[0] == "white hanging heart t-light holder."
    assert from_csv.item_texts[0] == from_xlsx.item_texts[0] == "café crème holder."
