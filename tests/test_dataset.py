import numpy as np
import pytest

from unisrec.data.dataset import Dataset, DatasetError


def make(seqs, tmp_path=None):
    lens = [len(s) for s in seqs]
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    items = np.concatenate([np.asarray(s, dtype=np.int32) for s in seqs])
    n_items = int(items.max())
    ds = Dataset(
        name="toy",
        item_ids=[f"i{k}" for k in range(1, n_items + 1)],
        item_texts=[f"text {k}." for k in range(1, n_items + 1)],
        user_ids=[f"u{k}" for k in range(len(seqs))],
        seq_offsets=offsets,
        seq_items=items,
    )
    if tmp_path is not None:
        ds.save(tmp_path / "toy")
    return ds


def test_leave_one_out_known_answer():
    ds = make([[1, 2, 3, 4, 5], [6, 7, 8], [2, 9]])
    hist, lens, tgt = ds.examples("train", max_history=4)
    # user 0: targets 2,3 (positions 1..len-3); user 1: none (len 3); user 2: none
    assert tgt.tolist() == [2, 3]
    assert hist.tolist() == [[1, 0, 0, 0], [1, 2, 0, 0]]
    assert lens.tolist() == [1, 2]
    hist, lens, tgt = ds.examples("valid", max_history=4)
    assert tgt.tolist() == [4, 7]
    assert hist.tolist() == [[1, 2, 3, 0], [6, 0, 0, 0]]
    hist, lens, tgt = ds.examples("test", max_history=4)
    assert tgt.tolist() == [5, 8, 9]
    assert hist.tolist() == [[1, 2, 3, 4], [6, 7, 0, 0], [2, 0, 0, 0]]


def test_history_cap_keeps_latest_items():
    ds = make([list(range(1, 11))])
    hist, lens, tgt = ds.examples("test", max_history=3)
    assert hist.tolist() == [[7, 8, 9]] and lens.tolist() == [3] and tgt.tolist() == [10]


def test_save_load_round_trip_is_byte_identical(tmp_path):
    ds = make([[1, 2, 3, 4, 5], [3, 2, 1]], tmp_path)
    again = Dataset.load(tmp_path / "toy")
    assert again.item_ids == ds.item_ids and again.user_ids == ds.user_ids
    np.testing.assert_array_equal(again.seq_items, ds.seq_items)
    first = {p.name: p.read_bytes() for p in (tmp_path / "toy").iterdir()}
    again.save(tmp_path / "toy2")
    second = {p.name: p.read_bytes() for p in (tmp_path / "toy2").iterdir()}
    assert first == second


def test_missing_features_message(tmp_path):
    ds = make([[1, 2, 3]], tmp_path)
    with pytest.raises(DatasetError, match="unisrec encode"):
        ds.features()
