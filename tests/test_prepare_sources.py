"""Each prepare source end to end on small generated files: counts, order, split, determinism,
round trip through export-atomic, the CLI, and that prepare never imports torch."""

import gzip
import json
import subprocess
import sys

import numpy as np

from unisrec.cli import main
from unisrec.data import Dataset, dataset_stats, export_atomic, prepare_amazon, prepare_atomic, prepare_table


def write_amazon(tmp_path, *, n_users=8, n_items=7, py_literal_meta=False, extra_rows=()):
    """Dense ratings (every user rates every item), so the 5-core keeps all of them."""
    rows = []
    for u in range(n_users):
        for i in range(n_items):
            rows.append(f"I{i},U{u},5.0,{1000 + 10 * u + (i * 3) % n_items}")
    rows += list(extra_rows)
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("\n".join(rows) + "\n")
    meta = tmp_path / "meta.json.gz"
    with gzip.open(meta, "wt") as fh:
        for i in range(n_items):
            rec = {"asin": f"I{i}", "title": f"Item &amp; {i}...", "category": ["Cat", f"Sub{i % 2}"], "brand": "Acme"}
            fh.write((repr(rec) if py_literal_meta else json.dumps(rec)) + "\n")
    return ratings, meta


def test_amazon_known_answer(tmp_path):
    extra = ["I99,U0,3.0,5", "I0,U0,5.0,1000"]  # item without meta; an exact duplicate of the first row
    ratings, meta = write_amazon(tmp_path, extra_rows=extra)
    ds = prepare_amazon(ratings, meta, tmp_path / "out")
    assert (ds.num_users, ds.num_items, ds.num_interactions) == (8, 7, 56)
    assert ds.manifest["dropped"] == {"duplicate": 1, "no_meta": 1}
    assert ds.manifest["source"] == "amazon" and ds.manifest["split"]["given"] is False
    # user U0's times are 1000 + (3i mod 7): order of items by time is I0, I5, I3, I1, I6, I4, I2
    order = [ds.item_ids[k - 1] for k in ds.sequence(ds.user_ids.index("U0"))]
    assert order == ["I0", "I5", "I3", "I1", "I6", "I4", "I2"]
    assert ds.item_texts[ds.item_ids.index("I3")] == "Item & 3. Cat Sub1. Acme."
    again = Dataset.load(tmp_path / "out")
    assert again.user_ids == ds.user_ids and np.array_equal(again.seq_items, ds.seq_items)


def test_amazon_2014_python_literal_meta_and_column_order(tmp_path):
    ratings, meta = write_amazon(tmp_path, py_literal_meta=True)
    swapped = tmp_path / "r2014.csv"  # 2014 files: user,item,rating,timestamp
    swapped.write_text("".join(",".join([l.split(",")[1], l.split(",")[0]] + l.split(",")[2:]) + "\n"
                               for l in ratings.read_text().splitlines()))
    a = prepare_amazon(ratings, meta)
    b = prepare_amazon(swapped, meta, ratings_columns=("user", "item", "rating", "timestamp"))
    assert a.item_texts == b.item_texts and a.user_ids == b.user_ids
    assert np.array_equal(a.seq_items, b.seq_items)


def test_tie_break_follows_input_row_order(tmp_path):
    # U0 rates I0 and I1 at the same second; whichever row comes first in the file comes first
    ratings, meta = write_amazon(tmp_path)
    lines = ratings.read_text().splitlines()
    u0 = [k for k, l in enumerate(lines) if l.split(",")[1] == "U0"]
    for swap in (False, True):
        body = [l for l in lines]
        body[u0[0]] = "I0,U0,5.0,999"
        body[u0[1]] = "I1,U0,5.0,999"
        if swap:
            body[u0[0]], body[u0[1]] = body[u0[1]], body[u0[0]]
        ratings.write_text("\n".join(body) + "\n")
        ds = prepare_amazon(ratings, meta)
        first_two = [ds.item_ids[k - 1] for k in ds.sequence(ds.user_ids.index("U0"))[:2]]
        assert first_two == (["I1", "I0"] if swap else ["I0", "I1"])


def write_table(tmp_path, n_users=6, seq_len=60, n_items=70):
    """User u interacts with items (u + t) % n_items at time t; one user has a 60-long history."""
    rows = ["user_id,item_id,timestamp"]
    for u in range(n_users):
        length = seq_len if u == 0 else 8
        for t in range(length):
            rows.append(f"user{u},item{(u + t) % n_items},{1_600_000_000 + t}")
    inter = tmp_path / "inter.csv"
    inter.write_text("\n".join(rows) + "\n")
    items = tmp_path / "items.tsv"
    items.write_text("item_id\ttitle\tbrand\n" + "".join(f"item{i}\tThing {i}\tBrand{i % 3}\n" for i in range(n_items)))
    return inter, items


def test_table_source_split_and_history_cap(tmp_path):
    inter, items = write_table(tmp_path)
    ds = prepare_table(inter, items, tmp_path / "t", text_cols=("title", "brand"), min_user=1, min_item=1)
    assert ds.num_users == 6 and ds.num_interactions == 60 + 5 * 8
    assert ds.item_texts[ds.item_ids.index("item4")] == "Thing 4. Brand1."
    seq0 = [ds.item_ids[k - 1] for k in ds.sequence(0)]
    assert seq0 == [f"item{t % 70}" for t in range(60)]
    hist, lens, tgt = ds.examples("test", max_history=50)
    assert lens[0] == 50 and ds.item_ids[tgt[0] - 1] == "item59"
    assert [ds.item_ids[k - 1] for k in hist[0]] == [f"item{t}" for t in range(9, 59)]  # the latest 50
    hist, lens, tgt = ds.examples("valid", max_history=50)
    assert ds.item_ids[tgt[0] - 1] == "item58" and [ds.item_ids[k - 1] for k in hist[0][:1]] == ["item8"]
    _, _, tgt = ds.examples("train")
    assert len(tgt) == (60 - 3) + 5 * (8 - 3)


def test_table_source_shuffled_ties_recorded_and_repeatable(tmp_path):
    inter, items = write_table(tmp_path)
    header, *rows = inter.read_text().splitlines()
    # every interaction at one time, as all lines of an Online Retail invoice are
    inter.write_text("\n".join([header, *(r.rsplit(",", 1)[0] + ",1000" for r in rows)]) + "\n")
    kw = dict(text_cols=("title", "brand"), min_user=1, min_item=1)
    base = prepare_table(inter, items, tmp_path / "a", **kw)
    s1 = prepare_table(inter, items, tmp_path / "b", ties="shuffle", tie_seed=1, **kw)
    s1b = prepare_table(inter, items, tmp_path / "c", ties="shuffle", tie_seed=1, **kw)

    def ids(ds):
        return [[ds.item_ids[k - 1] for k in ds.sequence(u)] for u in range(ds.num_users)]

    assert ids(base)[1] == [f"item{1 + t}" for t in range(8)]  # input order kept by default
    assert ids(s1) == ids(s1b) and ids(s1) != ids(base)
    assert sorted(map(sorted, ids(s1))) == sorted(map(sorted, ids(base)))  # same interactions, other order
    assert "shuffled (seed 1)" in s1.manifest["split"]["order"]
    assert base.manifest["split"]["order"] == "time, ties by input row"


def test_table_parquet_and_column_options(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    inter = tmp_path / "clicks.parquet"
    pq.write_table(pa.table({"uid": [1, 1, 1, 2, 2, 2], "sku": ["a", "b", "c", "c", "a", "b"],
                             "when": pa.array([3, 1, 2, 1, 2, 3], pa.int64()).cast(pa.timestamp("s"))}), inter)
    items = tmp_path / "items.csv"
    items.write_text('sku,name\na,"Red, shoe"\nb,Hat\nc,Sock\n')
    ds = prepare_table(inter, items, item_col="sku", user_col="uid", time_col="when", item_id_col="sku",
                       text_cols=("name",), min_user=1, min_item=1)
    assert ds.user_ids == ["1", "2"]
    assert [ds.item_ids[k - 1] for k in ds.sequence(0)] == ["b", "c", "a"]
    assert ds.item_texts[ds.item_ids.index("a")] == "Red, shoe."


def test_prepare_twice_is_byte_identical(tmp_path):
    ratings, meta = write_amazon(tmp_path)
    # same name (it defaults to the folder's name, which is recorded in the manifest)
    prepare_amazon(ratings, meta, tmp_path / "a", name="x")
    prepare_amazon(ratings, meta, tmp_path / "b", name="x")
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == ["items.parquet", "manifest.json", "sequences.npz", "users.parquet"]
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_round_trip_export_atomic_reimport(tmp_path):
    inter, items = write_table(tmp_path)
    ds = prepare_table(inter, items, tmp_path / "t", text_cols=("title", "brand"), min_user=1, min_item=1)
    export_atomic(tmp_path / "t", tmp_path / "atomic", name="Toy")
    names = sorted(p.name for p in (tmp_path / "atomic").iterdir())
    assert names == ["Toy.item2index", "Toy.test.inter", "Toy.text", "Toy.train.inter", "Toy.user2index", "Toy.valid.inter"]
    back = prepare_atomic(tmp_path / "atomic", tmp_path / "back")
    assert back.item_ids == ds.item_ids and back.item_texts == ds.item_texts and back.user_ids == ds.user_ids
    assert np.array_equal(back.seq_offsets, ds.seq_offsets) and np.array_equal(back.seq_items, ds.seq_items)
    assert back.manifest["split"]["given"] is True
    # user 0 has 60 items: the train file is what recovers the items beyond the 50-item window
    assert len(back.sequence(0)) == 60
    # without the train file, valid + test still rebuild the last 52 items
    (tmp_path / "atomic" / "Toy.train.inter").unlink()
    short = prepare_atomic(tmp_path / "atomic")
    assert short.sequence(0).tolist() == ds.sequence(0)[-52:].tolist()


def test_cli_prepare_stats_export(tmp_path, capsys):
    ratings, meta = write_amazon(tmp_path)
    out = tmp_path / "ds"
    assert main(["prepare", "amazon", "--ratings", str(ratings), "--meta", str(meta), "--output", str(out)]) == 0
    assert "8 users, 7 items, 56 interactions" in capsys.readouterr().out
    assert main(["stats", str(out), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats == {"users": 8, "items": 7, "interactions": 56, "avg_seq_len": 7.0, "avg_text_words": 6.0}
    assert stats == dataset_stats(out)
    assert main(["export-atomic", str(out), str(tmp_path / "atom")]) == 0
    assert (tmp_path / "atom" / "ds.test.inter").read_text().count("\n") == 1 + 8


def test_prepare_does_not_import_torch(tmp_path):
    ratings, meta = write_amazon(tmp_path)
    code = (
        "import sys\n"
        "from unisrec.cli import main\n"
        f"rc = main(['prepare', 'amazon', '--ratings', {str(ratings)!r}, '--meta', {str(meta)!r}, '--output', {str(tmp_path / 'o')!r}])\n"
        "assert rc == 0, rc\n"
        "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_table_item_rows_first_wins_and_missing_items_counted(tmp_path):
    inter = tmp_path / "inter.tsv"
    inter.write_text("user_id\titem_id\ttimestamp\n" + "".join(f"u{u}\t{i}\t{t}\n" for u in range(2) for t, i in enumerate("abcz")))
    items = tmp_path / "items.csv"
    items.write_text("item_id,text\na,First A\nb,B\nc,C\na,Second A\n")
    ds = prepare_table(inter, items, min_user=1, min_item=1)
    assert ds.item_ids == ["a", "b", "c"] and ds.item_texts[0] == "First A."
    assert ds.manifest["dropped"] == {"duplicate_item_row": 1, "no_item_text": 2}
