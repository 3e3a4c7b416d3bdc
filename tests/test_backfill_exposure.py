"""benchmarks/backfill_exposure.py gives an archived cell its top-10 exposure from the run tree's weights,
only when the re-scored ranks prove they are the weights the archived metrics came from."""

import importlib.util
import shutil
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("backfill_exposure", ROOT / "benchmarks" / "backfill_exposure.py")
backfill = importlib.util.module_from_spec(spec)
spec.loader.exec_module(backfill)


def test_backfill_writes_the_trained_cells_exposure_only_for_matching_ranks(tmp_path, capsys):
    from test_finetune import cfg, make_toy, train_sasrec

    data = tmp_path / "toy"
    make_toy(data)
    runs, archive = tmp_path / "runs", tmp_path / "archive"
    cells = {seed: runs / "toy" / "SASRec" / f"seed{seed}" for seed in (1, 2)}
    for seed, cell in cells.items():
        train_sasrec(data, cell, cfg(epochs=1, seed=seed))
    written = {seed: np.load(cell / "test_exposure.npy") for seed, cell in cells.items()}  # what training saved
    for seed, cell in cells.items():  # an archive from before exposure existed: ranks only
        (archive / cell.relative_to(runs)).mkdir(parents=True)
        shutil.copy(cell / "test_ranks.npy", archive / cell.relative_to(runs) / "test_ranks.npy")
        (cell / "test_exposure.npy").unlink()
    other = np.load(archive / "toy/SASRec/seed2/test_ranks.npy")
    other[0] += 1  # seed 2's archived ranks no longer match its weights
    np.save(archive / "toy/SASRec/seed2/test_ranks.npy", other)
    (archive / "toy/SASRec/seed3").mkdir()  # a cell whose weights are gone
    shutil.copy(archive / "toy/SASRec/seed1/test_ranks.npy", archive / "toy/SASRec/seed3/test_ranks.npy")
    capsys.readouterr()

    assert backfill.main([str(runs), str(archive), "--dataset", str(data)]) == 0
    out = capsys.readouterr().out
    assert "seed1: written (ranks identical" in out
    assert "seed2: left alone: re-scored ranks differ from the archived ones for 1 of" in out
    assert "seed3: no weights" in out
    for folder in (cells[1], archive / "toy/SASRec/seed1"):
        assert np.array_equal(np.load(folder / "test_exposure.npy"), written[1])
    assert not (archive / "toy/SASRec/seed2/test_exposure.npy").exists() and not (cells[2] / "test_exposure.npy").exists()
