"""Input values and files that used to be misread or crash: NaN/inf times, BOM headers, ISO times with
a zone or a fraction, long texts, a .gz that is not gzip, a truncated .csv.gz, an unknown encoding."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from unisrec.cli import main
from unisrec.data import prepare_amazon, prepare_atomic, prepare_online_retail, prepare_table
from unisrec.errors import UserError


def table_files(tmp_path, times, header="user_id,item_id,timestamp", bom=False):
    rows = [f"u{u},i{k},{times[u * 3 + k]}" for u in range(2) for k in range(3)]
    inter = tmp_path / "inter.csv"
    inter.write_bytes((b"\xef\xbb\xbf" if bom else b"") + (header + "\n" + "\n".join(rows) + "\n").encode())
    items = tmp_path / "items.csv"
    items.write_text("item_id,text\n" + "".join(f"i{k},thing {k}\n" for k in range(3)))
    return inter, items


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "NaN"])
def test_nan_or_infinite_timestamp_is_a_bad_record(tmp_path, bad):
    times = [1, 2, 3, 4, 5, 6]
    times[4] = bad  # user u1's second row: line 6 of the file
    inter, items = table_files(tmp_path, times)
    with pytest.raises(UserError, match=rf"inter\.csv, line 6: column 'timestamp' is not a timestamp.*{bad}"):
        prepare_table(inter, items, min_user=1, min_item=1)
    ds = prepare_table(inter, items, min_user=1, min_item=1, on_bad_lines="skip")
    assert ds.manifest["dropped"] == {"bad_line:bad_timestamp": 1}
    assert [ds.item_ids[i - 1] for i in ds.sequence(1)] == ["i0", "i2"]  # the bad row is not the test target


def test_parquet_float_time_with_nan_is_a_bad_record(tmp_path):
    inter = tmp_path / "inter.parquet"
    pq.write_table(pa.table({"user_id": ["u"] * 4, "item_id": ["a", "b", "c", "d"],
                             "timestamp": pa.array([1.0, float("nan"), 3.0, 2.0], pa.float64())}), inter)
    items = tmp_path / "items.csv"
    items.write_text("item_id,text\na,A\nb,B\nc,C\nd,D\n")
    with pytest.raises(UserError, match=r"inter\.parquet, record 2: column 'timestamp' is not a timestamp.*nan"):
        prepare_table(inter, items, min_user=1, min_item=1)
    ds = prepare_table(inter, items, min_user=1, min_item=1, on_bad_lines="skip")
    assert [ds.item_ids[i - 1] for i in ds.sequence(0)] == ["a", "d", "c"]


def test_utf8_bom_header_is_accepted(tmp_path):
    inter, items = table_files(tmp_path, [1, 2, 3, 4, 5, 6], bom=True)
    items.write_bytes(b"\xef\xbb\xbf" + items.read_bytes())
    ds = prepare_table(inter, items, min_user=1, min_item=1)
    assert ds.user_ids == ["u0", "u1"] and ds.num_interactions == 6
    atomic = tmp_path / "atomic"
    atomic.mkdir()
    (atomic / "X.text").write_bytes(b"\xef\xbb\xbfitem_id:token\ttext:token_seq\na\tA.\nb\tB.\n")
    (atomic / "X.test.inter").write_bytes(b"\xef\xbb\xbfuser_id:token\titem_id_list:token_seq\titem_id:token\nu\ta\tb\n")
    assert prepare_atomic(atomic).item_texts == ["A.", "B."]


def test_iso_times_with_zone_and_fraction_are_accepted(tmp_path):
    times = ["2021-03-04T10:00:00Z", "2021-03-04T10:00:00.5Z", "2021-03-04 10:00:00.25",
             "2021-03-04T12:00:00+01:00", "2021-03-04T10:00:00.75Z", "2021-03-04T10:30"]
    inter, items = table_files(tmp_path, times)
    ds = prepare_table(inter, items, min_user=1, min_item=1)
    # u0: i0 10:00:00, i2 10:00:00.25, i1 10:00:00.5; u1: i1 10:00:00.75, i2 10:30, i0 12:00+01:00 = 11:00 UTC
    assert [ds.item_ids[i - 1] for i in ds.sequence(0)] == ["i0", "i2", "i1"]
    assert [ds.item_ids[i - 1] for i in ds.sequence(1)] == ["i1", "i2", "i0"]
    times[2] = "2021-13-04T10:00:00"  # no 13th month
    inter, items = table_files(tmp_path, times)
    with pytest.raises(UserError, match=r"line 4: column 'timestamp' is not a timestamp"):
        prepare_table(inter, items, min_user=1, min_item=1)


def test_long_texts_are_kept_not_called_empty(tmp_path):
    long = "word " * 500  # 2,500 characters
    inter, items = table_files(tmp_path, [1, 2, 3, 4, 5, 6])
    items.write_text(f"item_id,text\ni0,{long}\ni1,short\ni2,{long}x\n")
    ds = prepare_table(inter, items, min_user=1, min_item=1)
    assert ds.item_texts[ds.item_ids.index("i0")] == long + "."  # cleaned like any field, not cut
    assert all(len(ds.item_texts[ds.item_ids.index(i)]) >= 2000 for i in ("i0", "i2"))
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("".join(f"I{i},U{u},5.0,{10 * u + i}\n" for u in range(2) for i in range(3)))
    meta = tmp_path / "meta.json"
    recs = [{"asin": "I0", "title": "t" * 2500}, {"asin": "I1", "title": "T1", "brand": "b" * 2500},
            {"asin": "I2", "title": "T2"}]
    meta.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    ds = prepare_amazon(ratings, meta, min_user=1, min_item=1)
    text = dict(zip(ds.item_ids, ds.item_texts))
    assert text["I0"] == "t" * 2500 + "."  # nothing else: the long title is kept
    assert text["I1"] == "T1. "  # the release's rule still empties a long field beside others
    assert ds.manifest["long_field_texts_kept"] == 1


def test_gz_that_is_not_gzip_and_truncated_csv_gz(tmp_path, capsys):
    inter, items = table_files(tmp_path, [1, 2, 3, 4, 5, 6])
    fake = tmp_path / "inter.csv.gz"
    fake.write_bytes(inter.read_bytes())  # plain text with a .gz name
    rc = main(["prepare", "table", "--interactions", str(fake), "--items", str(items), "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "inter.csv.gz" in err and "gzip" in err and "Traceback" not in err
    rows = "".join(f"{n // 10},{n % 7},,{n % 3},2011-01-0{1 + n % 9} 10:00:00\n" for n in range(40_000))
    body = gzip.compress(("InvoiceNo,StockCode,Description,Quantity,InvoiceDate\n" + rows).encode())
    cut = tmp_path / "data.csv.gz"
    cut.write_bytes(body[: len(body) // 2])
    with pytest.raises(UserError, match=r"data\.csv\.gz: truncated or corrupt compressed file"):
        prepare_online_retail(cut)
    with pytest.raises(UserError, match=r"data\.csv\.gz: truncated or corrupt compressed file"):
        prepare_online_retail(cut, encoding="latin-1")


def test_unknown_encoding_is_a_one_line_error(tmp_path, capsys):
    data = tmp_path / "data.csv"
    data.write_text("InvoiceNo,StockCode,Description,Quantity,InvoiceDate\n1,a,X,1,2011-01-01 10:00:00\n")
    rc = main(["prepare", "online-retail", "--input", str(data), "--encoding", "klingon", "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "--encoding 'klingon' is not a known text encoding" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()
