"""A dataset directory with a truncated or empty file: a one-line error naming the file, from
Dataset.load, from feature loading and from the CLI -- never a traceback from numpy/pyarrow/json."""

import numpy as np
import pytest

from unisrec.cli import main
from unisrec.data.dataset import Dataset, DatasetError


def make(path):
    ds = Dataset(name="toy", item_ids=["a", "b", "c"], item_texts=["A.", "B.", "C."], user_ids=["u0", "u1"],
                 seq_offsets=np.array([0, 3, 6], dtype=np.int64), seq_items=np.array([1, 2, 3, 3, 2, 1], dtype=np.int32))
    ds.save(path)
    (path / "features").mkdir()
    np.save(path / "features" / "f.npy", np.ones((4, 8), dtype=np.float32))
    ds.update_manifest(features={"f": {"file": "features/f.npy", "dim": 8}}, default_features="f")
    return path


@pytest.mark.parametrize("name", ["manifest.json", "items.parquet", "users.parquet", "sequences.npz"])
@pytest.mark.parametrize("how", ["truncated", "empty"])
def test_damaged_dataset_file_is_named(tmp_path, capsys, name, how):
    d = make(tmp_path / "ds")
    data = (d / name).read_bytes()
    (d / name).write_bytes(data[: len(data) // 2] if how == "truncated" else b"")
    with pytest.raises(DatasetError, match=rf"{name}: "):
        Dataset.load(d)
    assert main(["stats", str(d)]) == 2
    err = capsys.readouterr().err
    assert name in err and "Traceback" not in err and err.count("\n") == 1


@pytest.mark.parametrize("how", ["truncated", "empty", "missing"])
def test_damaged_feature_file_is_named(tmp_path, how):
    d = make(tmp_path / "ds")
    f = d / "features" / "f.npy"
    if how == "missing":
        f.unlink()
    else:
        f.write_bytes(f.read_bytes()[:100] if how == "truncated" else b"")
    ds = Dataset.load(d)
    with pytest.raises(DatasetError, match=r"features/f\.npy: cannot be read"):
        ds.features("f")
