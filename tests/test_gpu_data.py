"""benchmarks/gpu_data.py carries datasets to a lent GPU under a size limit: what it packs must come back
out as the files training reads (names, dtype, values)."""

import importlib.util
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("gpu_data", ROOT / "benchmarks" / "gpu_data.py")
gpu_data = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_data)


def make_dataset(root: Path, name: str, rng) -> dict[str, np.ndarray]:
    feats = root / name / "features"
    feats.mkdir(parents=True)
    (root / name / "manifest.json").write_text("{}")
    arrays = {"f.npy": rng.normal(size=(50, 8)).astype(np.float32), "f.word-drop.npy": rng.normal(size=(50, 8)).astype(np.float32)}
    for fname, a in arrays.items():
        np.save(feats / fname, a)
    np.save(feats / "f.keys.npy", np.arange(50))
    return arrays


def test_pack_unpack_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "data"
    plain, half = make_dataset(src, "sci", rng), make_dataset(src, "games", rng)
    gpu_data.pack(src, tmp_path / "pack", ["sci", "games:half"])
    assert not list((tmp_path / "pack").rglob("*.keys.npy"))  # the encode cache's keys stay behind
    assert (tmp_path / "pack" / "sci" / "features" / "f.npy").read_bytes() == (src / "sci" / "features" / "f.npy").read_bytes()
    assert (tmp_path / "pack" / "games" / "features" / "f.f16.npy").exists()  # :half stores the clean copy as float16 too
    gpu_data.unpack(tmp_path / "pack")
    for name, arrays in (("sci", plain), ("games", half)):
        for fname, a in arrays.items():
            back = np.load(tmp_path / "pack" / name / "features" / fname)
            assert back.dtype == np.float32 and back.shape == a.shape
            exact = name == "sci" and "word-drop" not in fname
            np.testing.assert_allclose(back, a, rtol=0 if exact else 2**-10, atol=0 if exact else 1e-4)
    assert not list((tmp_path / "pack").rglob("*.f16.npy"))
