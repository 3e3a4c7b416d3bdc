"""Every bad-input case of issue 2: a clear error naming file + line/record + problem, or with
--on-bad-lines skip a count by reason in the output and the manifest. Never a silent drop."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from unisrec.cli import main
from unisrec.data import prepare_amazon, prepare_online_retail, prepare_table
from unisrec.errors import UserError

N_USERS, N_ITEMS = 6, 6


def ratings_lines():
    return [f"I{i},U{u},5.0,{1000 + 10 * u + i}" for u in range(N_USERS) for i in range(N_ITEMS)]


def write(tmp_path, lines=None, meta_records=None, raw_line=None):
    ratings = tmp_path / "ratings.csv"
    body = "\n".join(lines if lines is not None else ratings_lines()) + "\n"
    ratings.write_bytes(body.encode("utf-8") if isinstance(body, str) else body)
    meta = tmp_path / "meta.json.gz"
    recs = meta_records if meta_records is not None else [
        json.dumps({"asin": f"I{i}", "title": f"T{i}", "category": ["C"], "brand": "B"}) for i in range(N_ITEMS)]
    with gzip.open(meta, "wt") as fh:
        fh.write("\n".join(recs) + "\n")
    return ratings, meta


def run_cli(argv, capsys):
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_malformed_csv_line(tmp_path, capsys):
    lines = ratings_lines()
    lines.insert(6, "I0,U9,5.0")  # line 7: three fields
    ratings, meta = write(tmp_path, lines)
    with pytest.raises(UserError, match=r"ratings\.csv, line 7: malformed line \(expected 4 fields, found 3"):
        prepare_amazon(ratings, meta)
    out = tmp_path / "out"
    rc, stdout, err = run_cli(["prepare", "amazon", "--ratings", str(ratings), "--meta", str(meta), "--output", str(out)], capsys)
    assert rc == 2 and "line 7" in err and "Traceback" not in err
    assert not out.exists()  # a failed run leaves nothing that looks like a dataset
    assert not list(tmp_path.glob(".out*"))
    rc, stdout, err = run_cli(["prepare", "amazon", "--ratings", str(ratings), "--meta", str(meta), "--output", str(out),
                               "--on-bad-lines", "skip"], capsys)
    assert rc == 0 and "bad_line:malformed_csv 1" in stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dropped"]["bad_line:malformed_csv"] == 1
    assert manifest["counts"]["interactions"] == N_USERS * N_ITEMS
    assert "line 7" in manifest["bad_line_examples"]["bad_line:malformed_csv"]


def test_invalid_json_line(tmp_path):
    recs = [json.dumps({"asin": f"I{i}", "title": f"T{i}"}) for i in range(N_ITEMS)]
    recs.insert(2, '{"asin": "I9", "title": ')  # line 3: cut off
    ratings, meta = write(tmp_path, meta_records=recs)
    with pytest.raises(UserError, match=r"meta\.json\.gz, line 3: not a JSON object"):
        prepare_amazon(ratings, meta)
    ds = prepare_amazon(ratings, meta, on_bad_lines="skip")
    assert ds.manifest["dropped"] == {"bad_line:invalid_json": 1}


def test_truncated_gzip(tmp_path):
    ratings, meta = write(tmp_path, meta_records=[json.dumps({"asin": f"I{i}", "title": "x" * 300 + str(i)})
                                                  for i in range(400)])
    data = meta.read_bytes()
    meta.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"meta\.json\.gz: truncated or corrupt compressed file"):
        prepare_amazon(ratings, meta, on_bad_lines="skip")
    gz = tmp_path / "ratings.csv.gz"  # the ratings CSV may be gzipped too
    body = gzip.compress("".join(f"I{i % 40},U{i % 300},5.0,{i}\n" for i in range(100_000)).encode())
    gz.write_bytes(body[: len(body) // 2])
    with pytest.raises(UserError, match=r"ratings\.csv\.gz: truncated or corrupt compressed file"):
        prepare_amazon(gz, meta)


def test_missing_or_renamed_column(tmp_path):
    inter = tmp_path / "inter.csv"
    inter.write_text("user,item_id,timestamp\nu1,a,1\n")
    items = tmp_path / "items.csv"
    items.write_text("item_id,text\na,A\n")
    with pytest.raises(UserError, match=r"inter\.csv, line 1: missing column 'user_id' \(set it with --user-col\); the header has: user, item_id, timestamp"):
        prepare_table(inter, items)
    pq.write_table(pa.table({"InvoiceNo": ["1"], "StockCode": ["a"], "Desc": ["x"]}), tmp_path / "or.parquet")
    with pytest.raises(UserError, match=r"or\.parquet: missing column 'Description'"):
        prepare_online_retail(tmp_path / "or.parquet")


def test_empty_files(tmp_path):
    ratings, meta = write(tmp_path)
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match=r"empty\.csv: the file is empty"):
        prepare_amazon(empty, meta)
    empty_gz = tmp_path / "empty.json.gz"
    with gzip.open(empty_gz, "wb"):
        pass
    with pytest.raises(UserError, match=r"empty\.json\.gz: no meta records"):
        prepare_amazon(ratings, empty_gz)
    header_only = tmp_path / "h.csv"
    header_only.write_text("user_id,item_id,timestamp\n")
    items = tmp_path / "items.csv"
    items.write_text("item_id,text\na,A\n")
    with pytest.raises(UserError, match=r"h\.csv \+ .*items\.csv: no interactions to read \(no data rows\); check the input"):
        prepare_table(header_only, items)
    # rows that are read but all filtered out: the count read and what dropped them
    two = tmp_path / "two.csv"
    two.write_text("user_id,item_id,timestamp\nu1,a,1\nu2,a,2\n")
    with pytest.raises(UserError, match=r"two\.csv \+ .*items\.csv: no interactions left after filtering: all 2 read were "
                                        r"dropped \(kcore: 2\); the k-core keeps users with at least 5 and items with at least 5 interactions: "
                                        r"lower --min-user/--min-item"):
        prepare_table(two, items)


def test_non_utf8_bytes(tmp_path):
    lines = [l.encode() for l in ratings_lines()]
    lines[3] = b"I3,U\xff\xfe0,5.0,1003"  # line 4
    ratings, meta = write(tmp_path)
    ratings.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(UserError, match=r"ratings\.csv, line 4: column 'user' is not valid UTF-8"):
        prepare_amazon(ratings, meta)
    ds = prepare_amazon(ratings, meta, on_bad_lines="skip", min_user=1, min_item=1)
    assert ds.manifest["dropped"] == {"bad_line:non_utf8": 1}
    assert ds.num_interactions == N_USERS * N_ITEMS - 1


def test_non_numeric_timestamp(tmp_path):
    lines = ratings_lines()
    lines[10] = "I4,U1,5.0,yesterday"  # line 11
    lines[20] = "I2,U3,5.0,"  # line 21: empty
    ratings, meta = write(tmp_path, lines)
    with pytest.raises(UserError, match=r"ratings\.csv, line 21: empty 'timestamp'"):
        prepare_amazon(ratings, meta)
    lines[20] = "I2,U3,5.0,1032"
    ratings, meta = write(tmp_path, lines)
    with pytest.raises(UserError, match=r"ratings\.csv, line 11: column 'timestamp' is not a timestamp.*'yesterday'"):
        prepare_amazon(ratings, meta)
    ds = prepare_amazon(ratings, meta, on_bad_lines="skip", min_user=1, min_item=1)
    assert ds.manifest["dropped"] == {"bad_line:bad_timestamp": 1}


def test_empty_item_text(tmp_path):
    recs = [json.dumps({"asin": f"I{i}", "title": f"T{i}", "brand": "B"}) for i in range(N_ITEMS)]
    recs[4] = json.dumps({"asin": "I4", "title": "", "category": [], "brand": "&quot;&quot;"})  # line 5
    ratings, meta = write(tmp_path, meta_records=recs)
    with pytest.raises(UserError, match=r"meta\.json\.gz, line 5: item I4 has no title/category/brand text"):
        prepare_amazon(ratings, meta)
    ds = prepare_amazon(ratings, meta, on_bad_lines="skip", min_user=1, min_item=1)
    assert "I4" not in ds.item_ids
    assert ds.manifest["dropped"] == {"bad_line:empty_text": 1, "no_meta": N_USERS}
    items = tmp_path / "items.csv"
    items.write_text("item_id,text\na,A\nb,\n")
    inter = tmp_path / "inter.csv"
    inter.write_text("user_id,item_id,timestamp\nu,a,1\nu,b,2\n")
    with pytest.raises(UserError, match=r"items\.csv, line 3: item 'b' has an empty text"):
        prepare_table(inter, items, min_user=1, min_item=1)


def test_duplicate_rows(tmp_path):
    lines = ratings_lines()
    lines.append(lines[7])  # line 37 repeats line 8
    ratings, meta = write(tmp_path, lines)
    with pytest.raises(UserError, match=r"ratings\.csv, line 37: duplicate record \(same as .*ratings\.csv, line 8\)"):
        prepare_amazon(ratings, meta, duplicates="error")
    ds = prepare_amazon(ratings, meta)  # default: the paper's de-duplication, counted
    assert ds.manifest["dropped"] == {"duplicate": 1}
    assert ds.num_interactions == N_USERS * N_ITEMS


def test_missing_input_file_and_bad_option(tmp_path, capsys):
    ratings, meta = write(tmp_path)
    rc, _, err = run_cli(["prepare", "amazon", "--ratings", str(tmp_path / "nope.csv"), "--meta", str(meta),
                          "--output", str(tmp_path / "o")], capsys)
    assert rc == 2 and "nope.csv does not exist" in err
    with pytest.raises(UserError, match="--ratings-columns"):
        prepare_amazon(ratings, meta, ratings_columns=("item", "user", "stars", "timestamp"))
